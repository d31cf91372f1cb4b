"""Confusion histograms and scores against hand computation; the scoring CLI."""
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from data_helpers import rgb_image, write_index_png, write_rgb
from netgen.errors import FcnkitError
from solvers.score import fast_hist, format_table, main, metrics, score_dirs


def test_fast_hist_counts_and_ignores():
    label = np.array([[0, 0, 1, 255], [2, 2, 7, 1]])
    pred = np.array([[0, 1, 1, 2], [2, 0, 0, 1]])
    h = fast_hist(label, pred, 3)
    expect = np.zeros((3, 3), int)
    for t, p in [(0, 0), (0, 1), (1, 1), (2, 2), (2, 0), (1, 1)]:  # 255 and 7 dropped
        expect[t, p] += 1
    np.testing.assert_array_equal(h, expect)
    with pytest.raises(FcnkitError, match="prediction has class 3, outside 0..2"):
        fast_hist(label, np.full_like(pred, 3), 3)
    with pytest.raises(FcnkitError, match="differs from prediction shape"):
        fast_hist(label, pred[:, :3], 3)


def test_metrics_by_hand():
    # rows: truth, cols: prediction. class 1 only predicted, class 3 absent from both.
    hist = np.array([[3, 1, 0, 0],
                     [0, 0, 0, 0],
                     [2, 0, 4, 0],
                     [0, 0, 0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN handling must not warn
        m = metrics(hist)
    assert m["n_pixels"] == 10
    assert m["pixel_acc"] == pytest.approx(7 / 10)
    np.testing.assert_allclose(m["per_class_acc"], [3 / 4, np.nan, 4 / 6, np.nan])
    assert m["mean_acc"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    # IU = tp / (gt + pred - tp): class0 3/(4+5-3), class1 0/(0+1-0), class2 4/(6+4-4)
    np.testing.assert_allclose(m["per_class_iu"], [3 / 6, 0, 4 / 6, np.nan])
    assert m["mean_iu"] == pytest.approx((3 / 6 + 0 + 4 / 6) / 3)
    assert m["fw_iu"] == pytest.approx(0.4 * 3 / 6 + 0.6 * 4 / 6)


def test_metrics_empty_and_perfect():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = metrics(np.zeros((3, 3)))
    assert all(np.isnan(empty[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))
    perfect = metrics(np.diag([5, 0, 2]))
    assert perfect["mean_iu"] == 1 and perfect["pixel_acc"] == 1 and perfect["fw_iu"] == 1
    with pytest.raises(FcnkitError, match="square"):
        metrics(np.zeros((2, 3)))


def test_metrics_match_loop_computation():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 6, size=(40, 50))
    label[rng.random(label.shape) < 0.1] = 255
    pred = np.where(rng.random(label.shape) < 0.6, label % 5, rng.integers(0, 5, label.shape))
    pred[pred == 255] = 0
    m = metrics(fast_hist(label, pred, 5))  # class 5 of the labels is out of range: ignored
    valid = label < 5
    ius = []
    for c in range(5):
        t, p = (label == c) & valid, (pred == c) & valid
        ius.append((t & p).sum() / (t | p).sum())
    assert m["mean_iu"] == pytest.approx(np.mean(ius))
    assert m["pixel_acc"] == pytest.approx((label == pred)[valid].mean())


def test_format_table():
    m = metrics(np.array([[3, 1], [0, 0]]))
    text = format_table(m, ["background", "cat"])
    assert "background" in text and " 75.00" in text and "n/a" in text
    assert "mean IU" in text and "pixels scored" in text
    with pytest.raises(FcnkitError, match="3 class names for 2 classes"):
        format_table(m, ["a", "b", "c"])


def make_dirs(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt = np.array([[0, 0, 1], [1, 255, 2]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    for stem in ("a", "b"):
        write_index_png(gt_dir / f"{stem}.png", gt)
        write_index_png(pred_dir / f"{stem}.png", pred)
    return gt_dir, pred_dir, gt, pred


def test_score_dirs_and_cli(tmp_path, capsys):
    gt_dir, pred_dir, gt, pred = make_dirs(tmp_path)
    hist = score_dirs(pred_dir, gt_dir, 3)
    np.testing.assert_array_equal(hist, 2 * fast_hist(gt, pred, 3))
    assert main([str(pred_dir), str(gt_dir), "--classes", "3"]) == 0
    out = capsys.readouterr().out
    assert "mean IU" in out and f"{100 * metrics(hist)['mean_iu']:6.2f}" in out
    r = subprocess.run([sys.executable, "-m", "solvers.score", str(pred_dir), str(gt_dir),
                        "--classes", "21", "--names", "voc"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "aeroplane" in r.stdout and "tvmonitor" in r.stdout


@pytest.mark.parametrize("break_it, msg", [
    (lambda g, p: (p / "c.png").write_bytes((p / "a.png").read_bytes()),
     r"unmatched files: 1 file\(s\) only in .*pred: c"),
    (lambda g, p: (g / "b.png").unlink(), r"unmatched files: 1 file\(s\) only in .*pred: b"),
    (lambda g, p: write_index_png(p / "a.png", np.zeros((3, 3), np.uint8)),
     r"a\.png is 3x3 but .*a\.png is 3x2"),
    (lambda g, p: write_rgb(g / "a.png", rgb_image(2, 3)), "is an RGB colour image"),
    (lambda g, p: write_index_png(p / "a.png", np.full((2, 3), 9, np.uint8)),
     r"a\.png: prediction has class 9"),
])
def test_cli_errors(tmp_path, capsys, break_it, msg):
    gt_dir, pred_dir, _, _ = make_dirs(tmp_path)
    break_it(gt_dir, pred_dir)
    with pytest.raises(SystemExit) as e:
        main([str(pred_dir), str(gt_dir), "--classes", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(msg, err), err


def test_cli_argument_errors(tmp_path, capsys):
    gt_dir, pred_dir, _, _ = make_dirs(tmp_path)
    for argv, msg in (([str(tmp_path / "none"), str(gt_dir), "--classes", "3"],
                       "prediction folder .*none not found"),
                      ([str(pred_dir), str(gt_dir), "--classes", "3", "--names", "voc"],
                       "class list 'voc' has 21 names, not 3")):
        with pytest.raises(SystemExit):
            main(argv)
        assert re.search(msg, capsys.readouterr().err)
