"""Confusion matrix PNG and scores as JSON / CSV (solvers.score.write_scores)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from solvers.score import main, metrics, normalised_confusion, write_scores
from test_score import make_dirs


def test_normalised_confusion_rows_are_fractions_of_the_true_class():
    hist = np.array([[6, 2, 0],    # class 0: 8 pixels, 6 right, 2 taken for class 1
                     [1, 3, 0],    # class 1: 4 pixels
                     [0, 0, 0]])   # class 2: absent from the ground truth
    norm = normalised_confusion(hist)
    np.testing.assert_allclose(norm[0], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(norm[1], [0.25, 0.75, 0.0])
    assert np.isnan(norm[2]).all()
    np.testing.assert_allclose(np.diag(norm)[:2], metrics(hist)["per_class_acc"][:2])


def test_write_scores_png_json_csv(tmp_path):
    hist = np.array([[50, 5, 0], [10, 30, 5], [0, 0, 0]])
    png, js, table = write_scores(tmp_path / "s", hist, ["background", "cat", "dog"])
    m = metrics(hist)
    report = json.loads(js.read_text())
    assert report["mean_iu"] == pytest.approx(m["mean_iu"])
    assert report["confusion"] == hist.tolist() and report["n_pixels"] == 100
    assert [c["name"] for c in report["classes"]] == ["background", "cat", "dog"]
    # class 2: never true, 5 pixels predicted: IU 0, accuracy undefined (null, JSON has no NaN)
    assert report["classes"][2]["iu"] == 0.0 and report["classes"][2]["acc"] is None
    assert report["classes"][1]["iu"] == pytest.approx(30 / (45 + 35 - 30))
    rows = list(csv.DictReader(table.open()))
    assert [r["name"] for r in rows] == ["background", "cat", "dog"]
    assert (rows[1]["pixels"], rows[1]["predicted"]) == ("45", "35")
    assert float(rows[0]["acc"]) == pytest.approx(50 / 55) and rows[2]["acc"] == ""
    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.int64)
    assert img.shape[0] >= 400 and img.shape[1] >= 400
    # the heat map: dark blue cells (91% of class 0 right) and a grey row (class 2 absent)
    blue = (img[..., 2] - img[..., 0] > 60) & (img[..., 0] < 80)
    assert blue.sum() > 1000
    grey = (img == 216).all(-1)
    assert grey.sum() > 1000


def test_cli_writes_scores_beside_the_table(tmp_path, capsys):
    gt_dir, pred_dir, _, _ = make_dirs(tmp_path)
    assert main([str(pred_dir), str(gt_dir), "--classes", "3", "--out", str(tmp_path / "o")]) == 0
    assert "confusion matrix and scores" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "confusion.png", "scores.csv", "scores.json"]
    main([str(pred_dir), str(gt_dir), "--classes", "3"])
    assert (pred_dir / "scores" / "confusion.png").is_file()  # default: PRED_DIR/scores
    assert main([str(pred_dir), str(gt_dir), "--classes", "3"]) == 0  # and scores again
