"""The synthetic VOC-layout generator: deterministic, valid VOC files, class cues present."""
import hashlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from netgen.errors import FcnkitError
from solvers.data.layers import dataset_from_layer
from solvers.data.synthetic import make_synthetic_voc, render, sample_rng
from solvers.score import fast_hist, metrics


def digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def test_deterministic(tmp_path):
    a = make_synthetic_voc(tmp_path / "a", 4, 2, (24, 32), 5, seed=7)
    b = make_synthetic_voc(tmp_path / "b", 4, 2, (24, 32), 5, seed=7)
    c = make_synthetic_voc(tmp_path / "c", 4, 2, (24, 32), 5, seed=8)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    assert len(digest(a)) == 2 * 6 + 2


def test_voc_layout_read_by_voc_loader(tmp_path):
    root = make_synthetic_voc(tmp_path, 6, 3, (24, 32), 3, seed=1)
    assert (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split() == \
        ["val_00000", "val_00001", "val_00002"]
    png = Image.open(root / "SegmentationClass" / "train_00000.png")
    assert png.mode == "P" and png.getpalette()[3:6] == [128, 0, 0]
    ds = dataset_from_layer("voc_layers", "VOCSegDataLayer",
                            f"{{'voc_dir': '{root}', 'split': 'train', 'seed': 1}}")
    mem = dataset_from_layer("solvers.data.layers", "SyntheticSegDataLayer",
                             "{'split': 'train', 'n_classes': 3, 'size': (24, 32), "
                             "'length': 6, 'data_seed': 1}")
    for i in range(len(ds)):
        item = ds[i]
        assert item["data"].shape == (3, 24, 32)
        assert set(np.unique(item["label"])) <= {0, 1, 2, 3, 255}
        np.testing.assert_array_equal(item["label"], mem[i]["label"])  # same content
        # the pixels differ only by JPEG loss (of the added noise, mostly)
        assert np.corrcoef(item["data"].ravel(), mem[i]["data"].ravel())[0, 1] > 0.9


def hue_gap(a, b):
    """Circular distance of two PIL hues (0..255)."""
    d = abs(a - b) % 256
    return min(d, 256 - d)


def test_class_cues_and_background_baseline():
    n = 5  # hue groups: {1, 4}, {2, 5}, {3}; textures: flat, bars, checker, dots, waves
    hist = np.zeros((n + 1, n + 1), np.int64)
    hues = {k: [] for k in range(1, n + 1)}
    roughness = {k: [] for k in range(1, n + 1)}
    for i in range(60):
        rgb, label = render(sample_rng(0, "train", i), (48, 48), n)
        hsv = np.asarray(Image.fromarray(rgb).convert("HSV"), np.float32)
        value = hsv[..., 2]
        for k in range(1, n + 1):
            m = label == k
            inner = m[1:, :] & m[:-1, :]  # vertical neighbour pairs inside the region
            if inner.sum() > 20:
                hues[k].append(np.median(hsv[..., 0][m]))
                roughness[k].append(np.abs(value[1:] - value[:-1])[inner].mean())
        hist += fast_hist(label, np.zeros_like(label), n + 1)
    assert all(len(hues[k]) >= 5 for k in hues), "every class appears"
    hue = {k: float(np.median(v)) for k, v in hues.items()}
    rough = {k: float(np.median(v)) for k, v in roughness.items()}
    assert hue_gap(hue[1], hue[4]) < 8 and hue_gap(hue[2], hue[5]) < 8  # shared hues
    for a, b in ((1, 2), (1, 3), (2, 3)):
        assert hue_gap(hue[a], hue[b]) > 50  # distinct hue groups (256 / 3 apart)
    assert rough[4] > 2 * rough[1]  # dots vs flat tell the red pair apart
    m = metrics(hist)
    assert 0.5 < m["pixel_acc"] < 0.95  # background dominates but is far from everything
    assert m["mean_iu"] < 1.5 / (n + 1)


def test_bad_arguments(tmp_path):
    with pytest.raises(FcnkitError, match="n_classes must be 1..8"):
        make_synthetic_voc(tmp_path, 1, 1, (16, 16), 9)
    with pytest.raises(FcnkitError, match="size must be"):
        make_synthetic_voc(tmp_path, 1, 1, (4, 16), 2)
    with pytest.raises(FcnkitError, match="some items"):
        make_synthetic_voc(tmp_path, 0, 0)


def test_cli(tmp_path):
    out = tmp_path / "syn"
    r = subprocess.run([sys.executable, "-m", "solvers.data.synthetic", str(out), "--train", "3",
                        "--val", "2", "--size", "16", "20", "--classes", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote 3 train + 2 val images" in r.stdout
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 5
    r = subprocess.run([sys.executable, "-m", "solvers.data.synthetic", str(out), "--classes",
                        "0"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: synthetic data: n_classes")
    assert "Traceback" not in r.stderr
