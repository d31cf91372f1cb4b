"""VOC, SBD and PASCAL-Context loaders on tiny fixtures in the datasets' real layouts."""
import numpy as np
import pytest
from PIL import Image

from data_helpers import rgb_image, write_index_png, write_lines, write_mat, write_rgb
from netgen.errors import FcnkitError
from solvers.data.classes import PASCAL_CONTEXT
from solvers.data.layers import dataset_from_layer
from solvers.data.pascal import PASCALContextSegDataset, SBDDSegDataset, VOCSegDataset

VOC_MEAN = np.array((104.00699, 116.66877, 122.67892), dtype=np.float32)


def make_voc(root, items, h=6, w=8):
    """items: {name: label array}; images random JPEGs."""
    for k, (name, label) in enumerate(items.items()):
        write_rgb(root / "JPEGImages" / f"{name}.jpg", rgb_image(h, w, k))
        write_index_png(root / "SegmentationClass" / f"{name}.png", label)
    write_lines(root / "ImageSets" / "Segmentation" / "train.txt", list(items))
    return root


def test_voc_tops_match_independent_decode(tmp_path):
    label = np.array([[0, 1, 255, 20]] * 3 + [[15, 15, 0, 0]] * 3, dtype=np.uint8)
    label = np.repeat(label, 2, axis=1)
    make_voc(tmp_path, {"2007_000032": label})
    ds = VOCSegDataset({"voc_dir": str(tmp_path), "split": "train"})
    item = ds[0]
    assert ds.tops == ("data", "label") and len(ds) == 1
    assert item["label"].dtype == np.uint8 and item["label"].shape == (1, 6, 8)
    np.testing.assert_array_equal(item["label"][0], label)
    rgb = np.asarray(Image.open(tmp_path / "JPEGImages" / "2007_000032.jpg"), np.float32)
    assert item["data"].dtype == np.float32 and item["data"].shape == (3, 6, 8)
    for c, rgb_channel in enumerate((2, 1, 0)):  # BGR planes minus the BGR mean
        np.testing.assert_allclose(item["data"][c], rgb[:, :, rgb_channel] - VOC_MEAN[c],
                                   rtol=0, atol=1e-4)


def test_voc_mean_param_is_used(tmp_path):
    make_voc(tmp_path, {"a": np.zeros((6, 8), np.uint8)})
    ds0 = VOCSegDataset({"voc_dir": str(tmp_path), "split": "train", "mean": (0, 0, 0)})
    ds1 = VOCSegDataset({"voc_dir": str(tmp_path), "split": "train", "mean": (1, 2, 3)})
    diff = ds0[0]["data"] - ds1[0]["data"]
    np.testing.assert_allclose(diff.reshape(3, -1).mean(1), [1, 2, 3], atol=1e-5)


def test_voc_errors(tmp_path):
    make_voc(tmp_path, {"a": np.zeros((6, 8), np.uint8)})
    with pytest.raises(FcnkitError, match=r"voc_dir .*nope is not a directory"):
        VOCSegDataset({"voc_dir": str(tmp_path / "nope"), "split": "train"})
    with pytest.raises(FcnkitError, match=r"split file .*val\.txt not found"):
        VOCSegDataset({"voc_dir": str(tmp_path), "split": "val"})
    write_lines(tmp_path / "ImageSets" / "Segmentation" / "empty.txt", [])
    with pytest.raises(FcnkitError, match="lists no items"):
        VOCSegDataset({"voc_dir": str(tmp_path), "split": "empty"})
    write_lines(tmp_path / "ImageSets" / "Segmentation" / "ghost.txt", ["ghost"])
    ds = VOCSegDataset({"voc_dir": str(tmp_path), "split": "ghost"})
    with pytest.raises(FcnkitError, match=r"item 'ghost' of split 'ghost': image .*ghost\.jpg "
                                          r"not found"):
        ds[0]


def test_voc_rgb_label_and_size_mismatch_refused(tmp_path):
    make_voc(tmp_path, {"rgb": np.zeros((6, 8), np.uint8), "small": np.zeros((6, 8), np.uint8)})
    write_rgb(tmp_path / "SegmentationClass" / "rgb.png", rgb_image(6, 8))  # colour label
    write_index_png(tmp_path / "SegmentationClass" / "small.png", np.zeros((5, 8), np.uint8))
    ds = VOCSegDataset({"voc_dir": str(tmp_path), "split": "train"})
    with pytest.raises(FcnkitError, match=r"rgb\.png is an RGB colour image; expected palette"):
        ds[0]
    with pytest.raises(FcnkitError, match=r"label .*small\.png is 8x5 but data .*small\.jpg "
                                          r"is 8x6"):
        ds[1]


def test_voc_corrupt_image(tmp_path):
    make_voc(tmp_path, {"a": np.zeros((6, 8), np.uint8)})
    (tmp_path / "JPEGImages" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FcnkitError, match="cannot be read as an image"):
        VOCSegDataset({"voc_dir": str(tmp_path), "split": "train"})[0]


def test_sbd_mat_struct(tmp_path):
    seg = np.array([[0, 1, 2, 20]] * 5, dtype=np.uint8)
    write_rgb(tmp_path / "img" / "2008_000002.jpg", rgb_image(5, 4))
    write_mat(tmp_path / "cls" / "2008_000002.mat",
              GTcls={"Segmentation": seg, "Boundaries": np.zeros((20, 1), object),
                     "CategoriesPresent": np.array([[1, 2, 20]])})
    write_lines(tmp_path / "train.txt", ["2008_000002"])
    ds = dataset_from_layer("voc_layers", "SBDDSegDataLayer",
                            f"{{'sbdd_dir': '{tmp_path}', 'split': 'train', 'seed': 1337, "
                            f"'mean': (104.00699, 116.66877, 122.67892)}}")
    assert isinstance(ds, SBDDSegDataset)
    np.testing.assert_array_equal(ds[0]["label"], seg[None])
    write_mat(tmp_path / "cls" / "2008_000002.mat", Other=seg)
    with pytest.raises(FcnkitError, match="has no variable 'GTcls'"):
        ds[0]
    write_mat(tmp_path / "cls" / "2008_000002.mat", GTcls={"Boundaries": seg})
    with pytest.raises(FcnkitError, match="'GTcls' has no field 'Segmentation'"):
        ds[0]


def make_context(tmp_path):
    voc = tmp_path / "pascal" / "VOC2010"
    ctx = tmp_path / "pascal-context"
    write_rgb(voc / "JPEGImages" / "2008_000008.jpg", rgb_image(4, 5))
    write_lines(voc / "ImageSets" / "Main" / "train.txt", ["2008_000008"])
    # full label list: ids deliberately not in the 59-list's order, names with spaces
    full = ["accordion", "aeroplane", "air conditioner", "table", "cloth", "bedclothes",
            "wood", "person"]
    task = list(PASCAL_CONTEXT[1:])
    full += [n for n in task if n not in full and n not in ("diningtable", "bedcloth",
                                                            "clothes")]
    write_lines(ctx / "labels.txt", [f"{i}: {n}" for i, n in enumerate(full, 1)])
    write_lines(ctx / "59_labels.txt", [f"{i}: {n}" for i, n in enumerate(task, 1)])
    ids = {n: i for i, n in enumerate(full, 1)}
    return voc.parent, ctx, ids


def test_pascal_context_mapping(tmp_path):
    voc_dir, ctx, ids = make_context(tmp_path)
    raw = np.array([[ids["aeroplane"], ids["accordion"], ids["table"], 0, ids["wood"]],
                    [ids["cloth"], ids["bedclothes"], ids["person"], ids["air conditioner"],
                     ids["sky"]]] * 2)
    write_mat(ctx / "trainval" / "2008_000008.mat", LabelMap=raw.astype(np.uint16))
    ds = dataset_from_layer("pascalcontext_layers", "PASCALContextSegDataLayer",
                            f"{{'context_dir': '{ctx}', 'seed': 1337, 'split': 'train', "
                            f"'voc_dir': '{voc_dir}'}}")
    assert isinstance(ds, PASCALContextSegDataset)
    # aeroplane 1, not-in-task 0, table -> diningtable 11, wood 59, cloth -> clothes 28,
    # bedclothes -> bedcloth 52, person 15, sky 50
    expect = np.array([[1, 0, 11, 0, 59], [28, 52, 15, 0, 50]] * 2, dtype=np.uint8)
    np.testing.assert_array_equal(ds[0]["label"][0], expect)


def test_pascal_context_missing_class(tmp_path):
    voc_dir, ctx, ids = make_context(tmp_path)
    lines = (ctx / "labels.txt").read_text().splitlines()
    write_lines(ctx / "labels.txt", [x for x in lines if not x.endswith(": table")])
    with pytest.raises(FcnkitError, match="class 'table' of 59_labels.txt is not in"):
        PASCALContextSegDataset({"voc_dir": str(voc_dir), "context_dir": str(ctx),
                                 "split": "train"})
