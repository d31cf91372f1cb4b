"""The figures a demo run writes into <out>/plots: curves, confusion matrix with its scores,
net graph; the confusion matrix is the final stage's val test, recomputed on the deploy net."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from solve_helpers import one_thread
from solvers.data.classes import class_names
from solvers.data.readers import read_index_png
from solvers.data.synthetic import make_synthetic_voc
from solvers.demo import DemoConfig, run_demo
from solvers.figures import val_confusion


def test_val_confusion_counts_every_val_pixel(tmp_path):
    data = make_synthetic_voc(tmp_path / "data", 1, 3, (24, 24), 5, seed=1)
    names = class_names("synthetic", 6)
    truths = [read_index_png(data / "SegmentationClass" / f"{n}.png") for n in
              (data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()]
    per_class = sum(np.bincount(t[t != 255], minlength=6) for t in truths)
    labels = iter(t.copy() for t in truths)  # a perfect prediction, image by image
    perfect = val_confusion(data, names, lambda rgb: np.where((t := next(labels)) == 255, 0, t))
    np.testing.assert_array_equal(perfect, np.diag(per_class))
    background = val_confusion(data, names, lambda rgb: np.zeros(rgb.shape[:2], np.uint8))
    np.testing.assert_array_equal(background[:, 0], per_class)
    assert background[:, 1:].sum() == 0


def test_demo_writes_its_figures(tmp_path):
    out = tmp_path / "demo"
    with one_thread():
        summary = run_demo(out, DemoConfig(train=3, val=2, size=32, overlays=1),
                           backend="torch", iters=(3, 2, 2), progress=False)
    plots = out / "plots"
    expect = {"training.png", "confusion.png", "scores.json", "scores.csv"}
    expect |= {"net.png"} if shutil.which("dot") else set()
    assert {p.name for p in plots.iterdir()} == expect
    assert sorted(summary["figures"]) == sorted(str(plots / n) for n in expect)
    for name in expect - {"scores.json", "scores.csv"}:
        with Image.open(plots / name) as im:
            assert im.width > 200 and im.height > 200
    scores = json.loads((plots / "scores.json").read_text())
    assert sum(map(sum, scores["confusion"])) == scores["n_pixels"] > 0
    assert [c["name"] for c in scores["classes"]] == list(class_names("synthetic", 6))
    # the deploy net on the val images scores as the val net's final test did
    assert scores["mean_iu"] == pytest.approx(summary["stages"][-1]["mean_iu"], abs=1e-12)
