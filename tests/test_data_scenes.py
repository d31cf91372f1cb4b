"""SIFT Flow and NYUDv2 loaders on tiny fixtures in the FCN reference data layouts."""
import numpy as np
import pytest
from PIL import Image

from data_helpers import rgb_image, write_lines, write_mat, write_rgb
from netgen.errors import FcnkitError
from solvers.data.layers import dataset_from_layer
from solvers.data.scenes import SIFTFLOW_SUBDIR


def make_siftflow(root, sem, geo):
    name = "coast_arnat59"
    write_rgb(root / "Images" / SIFTFLOW_SUBDIR / f"{name}.jpg", rgb_image(*sem.shape))
    write_mat(root / "SemanticLabels" / SIFTFLOW_SUBDIR / f"{name}.mat", S=sem)
    write_mat(root / "GeoLabels" / SIFTFLOW_SUBDIR / f"{name}.mat", S=geo)
    write_lines(root / "trainval.txt", [name])
    return f"{{'siftflow_dir': '{root}', 'seed': 1337, 'split': 'trainval'}}"


def test_siftflow_labels(tmp_path):
    sem = np.array([[0, 1, 33, 28]] * 3, dtype=np.int32)  # MATLAB stores doubles/ints
    geo = np.array([[-1, 0, 1, 3]] * 3, dtype=np.int32)
    ds = dataset_from_layer("siftflow_layers", "SIFTFlowSegDataLayer",
                            make_siftflow(tmp_path, sem, geo))
    item = ds[0]
    assert ds.tops == ("data", "sem", "geo") and ds.randomize  # 'train' in 'trainval'
    np.testing.assert_array_equal(item["sem"][0], [[255, 0, 32, 27]] * 3)
    np.testing.assert_array_equal(item["geo"][0], [[255, 255, 0, 2]] * 3)
    rgb = np.asarray(Image.open(tmp_path / "Images" / SIFTFLOW_SUBDIR / "coast_arnat59.jpg"),
                     np.float32)
    np.testing.assert_allclose(item["data"][0], rgb[:, :, 2] - 114.578, atol=1e-4)


def test_siftflow_out_of_range_label(tmp_path):
    sem = np.full((3, 4), 34, dtype=np.int32)
    ds = dataset_from_layer("siftflow_layers", "SIFTFlowSegDataLayer",
                            make_siftflow(tmp_path, sem, np.ones((3, 4), np.int32)))
    with pytest.raises(FcnkitError, match="has value 34; expected 0..33"):
        ds[0]


def make_nyud(root, h=4, w=5):
    write_rgb(root / "data" / "images" / "img_5001.png", rgb_image(h, w, 1))
    depth = np.arange(h * w, dtype=np.uint16).reshape(h, w) * 300  # millimetres, one zero
    (root / "data" / "depth").mkdir(parents=True)
    Image.fromarray(depth).save(root / "data" / "depth" / "img_5001.png")  # 16-bit PNG
    write_rgb(root / "data" / "hha" / "img_5001.png", rgb_image(h, w, 2))
    seg = (np.arange(h * w) % 41).reshape(h, w).astype(np.uint8)
    write_mat(root / "segmentation" / "img_5001.mat", segmentation=seg)
    write_lines(root / "val.txt", ["5001"])
    return depth, seg


def test_nyud_tops_in_given_order(tmp_path):
    depth, seg = make_nyud(tmp_path)
    ds = dataset_from_layer("nyud_layers", "NYUDSegDataLayer",
                            f"{{'tops': ['label', 'hha', 'depth', 'color'], 'seed': 1337, "
                            f"'nyud_dir': '{tmp_path}', 'split': 'val'}}")
    assert ds.tops == ("label", "hha", "depth", "color") and not ds.randomize
    item = ds[0]
    expect = np.where(seg > 0, seg.astype(int) - 1, 255)
    np.testing.assert_array_equal(item["label"][0], expect)
    d = np.maximum(depth.astype(np.float64), 1)
    np.testing.assert_allclose(item["depth"][0], np.log(d) - 7.844, atol=1e-5)
    hha = np.asarray(Image.open(tmp_path / "data" / "hha" / "img_5001.png"), np.float32)
    np.testing.assert_allclose(item["hha"].transpose(1, 2, 0),
                               hha - np.array((132.431, 94.076, 118.477), np.float32), atol=1e-4)
    color = np.asarray(Image.open(tmp_path / "data" / "images" / "img_5001.png"), np.float32)
    np.testing.assert_allclose(item["color"].transpose(1, 2, 0),
                               color[:, :, ::-1] - np.array((116.190, 97.203, 92.318),
                                                            np.float32), atol=1e-4)
    assert all(np.isfinite(v).all() for v in item.values())


def test_nyud_single_top(tmp_path):
    make_nyud(tmp_path)
    ds = dataset_from_layer("nyud_layers", "NYUDSegDataLayer",
                            f"{{'tops': ['color'], 'nyud_dir': '{tmp_path}', 'split': 'val'}}")
    assert list(ds[0]) == ["color"]
