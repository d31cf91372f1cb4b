"""Cityscapes, KITTI road, SYNTHIA and ADE20K loaders on tiny fixtures in their layouts."""
import cv2
import numpy as np
import pytest

from data_helpers import rgb_image, write_index_png, write_lines, write_rgb
from netgen.errors import FcnkitError
from solvers.data import classes
from solvers.data.layers import dataset_from_layer


def ps(**kw) -> str:
    return repr(kw)


def test_cityscapes_train_ids(tmp_path):
    ids = np.array([[7, 8, 26, 0], [1, 24, 33, 9], [255, 23, 11, 31]], dtype=np.uint8)
    for city, n in (("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")):
        write_rgb(tmp_path / "leftImg8bit" / "train" / city / f"{n}_leftImg8bit.png",
                  rgb_image(3, 4))
        write_index_png(tmp_path / "gtFine" / "train" / city / f"{n}_gtFine_labelIds.png", ids,
                        palette=False)
        # colour and instance files beside it must not be picked up
        write_rgb(tmp_path / "gtFine" / "train" / city / f"{n}_gtFine_color.png",
                  rgb_image(3, 4))
    ds = dataset_from_layer("solvers.data.layers", "CityscapesSegDataLayer",
                            ps(cityscapes_dir=str(tmp_path), split="train", seed=1))
    assert ds.ids == ["aachen/aachen_000000_000019", "bochum/bochum_000000_000313"]
    want = np.array([[0, 1, 13, 255], [255, 11, 18, 255], [255, 10, 2, 16]], dtype=np.uint8)
    np.testing.assert_array_equal(ds[1]["label"][0], want)
    # the whole official table: 19 ids map onto 0..18 exactly once
    assert sorted(classes.CITYSCAPES_ID_TO_TRAIN.values()) == list(range(19))
    with pytest.raises(FcnkitError, match=r"folder .*leftImg8bit/val not found"):
        dataset_from_layer("solvers.data.layers", "CityscapesSegDataLayer",
                           ps(cityscapes_dir=str(tmp_path), split="val"))


def test_cityscapes_missing_gt(tmp_path):
    write_rgb(tmp_path / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit"
              ".png", rgb_image(3, 4))
    ds = dataset_from_layer("solvers.data.layers", "CityscapesSegDataLayer",
                            ps(cityscapes_dir=str(tmp_path), split="val"))
    with pytest.raises(FcnkitError, match=r"label .*lindau_000000_000019_gtFine_labelIds\.png "
                                          r"not found"):
        ds[0]


KITTI_COLOURS = {"magenta": (255, 0, 255), "red": (255, 0, 0), "black": (0, 0, 0)}


def make_kitti(root):
    gt = np.zeros((2, 3, 3), np.uint8)
    gt[0, 0], gt[0, 1], gt[0, 2] = KITTI_COLOURS["magenta"], KITTI_COLOURS["red"], \
        KITTI_COLOURS["black"]
    gt[1] = KITTI_COLOURS["magenta"]
    train = root / "data_road" / "training"
    for name, gtname in (("um_000000", "um_road_000000"), ("uu_000097", "uu_road_000097")):
        write_rgb(train / "image_2" / f"{name}.png", rgb_image(2, 3))
        write_rgb(train / "gt_image_2" / f"{gtname}.png", gt)
    write_rgb(train / "gt_image_2" / "um_lane_000000.png", np.zeros((2, 3, 3), np.uint8))
    return train


def test_kitti_road_colours(tmp_path):
    make_kitti(tmp_path)
    for kitti_dir in (tmp_path, tmp_path / "data_road"):  # the folder or its parent
        ds = dataset_from_layer("solvers.data.layers", "KITTIRoadSegDataLayer",
                                ps(kitti_dir=str(kitti_dir), split="train"))
        assert ds.ids == ["um_000000", "uu_000097"]
        np.testing.assert_array_equal(ds[0]["label"][0], [[1, 0, 255], [1, 1, 1]])
    write_lines(tmp_path / "data_road" / "val.txt", ["uu_000097"])
    ds = dataset_from_layer("solvers.data.layers", "KITTIRoadSegDataLayer",
                            ps(kitti_dir=str(tmp_path), split="val"))
    assert ds.ids == ["uu_000097"] and not ds.randomize


def test_kitti_palette_gt_refused(tmp_path):
    train = make_kitti(tmp_path)
    write_index_png(train / "gt_image_2" / "um_road_000000.png", np.zeros((2, 3), np.uint8))
    ds = dataset_from_layer("solvers.data.layers", "KITTIRoadSegDataLayer",
                            ps(kitti_dir=str(tmp_path), split="train"))
    with pytest.raises(FcnkitError, match="is mode P; expected an RGB colour image"):
        ds[0]


def make_synthia(root, class_ids):
    write_rgb(root / "RGB" / "0000000.png", rgb_image(*class_ids.shape))
    rgb16 = np.zeros(class_ids.shape + (3,), np.uint16)
    rgb16[:, :, 0] = class_ids            # first channel: class id
    rgb16[:, :, 1] = 1000 + class_ids     # second: instance id, must be ignored
    path = root / "GT" / "LABELS" / "0000000.png"
    path.parent.mkdir(parents=True)
    assert cv2.imwrite(str(path), rgb16[:, :, ::-1])  # cv2 writes BGR order
    return path


def test_synthia_first_channel_to_cityscapes(tmp_path):
    ids = np.array([[0, 1, 2, 3], [8, 10, 13, 22], [16, 18, 20, 300]], dtype=np.uint16)
    path = make_synthia(tmp_path, ids)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    ds19 = dataset_from_layer("solvers.data.layers", "SYNTHIASegDataLayer",
                              ps(synthia_dir=str(tmp_path), split="train"))
    np.testing.assert_array_equal(ds19[0]["label"][0],
                                  [[255, 10, 2, 0], [13, 11, 255, 255], [9, 14, 16, 255]])
    ds16 = dataset_from_layer("solvers.data.layers", "SYNTHIASegDataLayer",
                              ps(synthia_dir=str(tmp_path), split="train", classes=16))
    assert ds16.n_classes == 16 and ds19.n_classes == 19
    np.testing.assert_array_equal(ds16[0]["label"][0],
                                  [[255, 9, 2, 0], [12, 10, 255, 255], [255, 255, 255, 255]])


def test_synthia_grey_label_refused(tmp_path):
    make_synthia(tmp_path, np.zeros((2, 2), np.uint16))
    cv2.imwrite(str(tmp_path / "GT" / "LABELS" / "0000000.png"), np.zeros((2, 2), np.uint16))
    ds = dataset_from_layer("solvers.data.layers", "SYNTHIASegDataLayer",
                            ps(synthia_dir=str(tmp_path), split="train"))
    with pytest.raises(FcnkitError, match="expected 3 or 4 channels"):
        ds[0]


def test_ade20k(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    ann = np.array([[0, 5, 1, 150]] * 2, dtype=np.uint8)
    for split, name in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        write_rgb(root / "images" / split / f"{name}.jpg", rgb_image(2, 4))
        write_index_png(root / "annotations" / split / f"{name}.png", ann, palette=False)
    for split in ("training", "train"):
        ds = dataset_from_layer("solvers.data.layers", "ADE20KSegDataLayer",
                                ps(ade_dir=str(root), split=split))
        assert ds.ids == ["ADE_train_00000001"] and ds.randomize
        np.testing.assert_array_equal(ds[0]["label"][0], [[255, 4, 0, 149]] * 2)
    ds = dataset_from_layer("solvers.data.layers", "ADE20KSegDataLayer",
                            ps(ade_dir=str(root), split="val"))
    assert ds.ids == ["ADE_val_00000001"] and not ds.randomize
    write_index_png(root / "annotations" / "validation" / "ADE_val_00000001.png",
                    np.full((2, 4), 151, np.uint8))
    with pytest.raises(FcnkitError, match="has value 151; expected 0..150"):
        ds[0]
    assert len(classes.ADE20K) == 150
