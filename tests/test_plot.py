"""Training curves (solvers.plot): Caffe log parsing, metrics.jsonl reading, the PNG."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from netgen.errors import FcnkitError
from solvers import plot

# A `caffe train` log as BVLC Caffe's glog writes it (solver.cpp: "Iteration N (x iter/s,
# ys/D iters), loss = L", Train/Test net output lines with "(* w = v loss)"; sgd_solver.cpp:
# "Iteration N, lr = R"), with the reference FCN score.py ">>>" lines of a pycaffe solve.py
# in between, as `python solve.py 2>&1 | tee log` interleaves them.
CAFFE_LOG = """\
I1130 05:01:02.123456 12345 caffe.cpp:218] Using GPUs 0
I1130 05:01:03.000001 12345 solver.cpp:44] Initializing solver from parameters:
I1130 05:01:05.500000 12345 solver.cpp:294] Solving voc-fcn32s
I1130 05:01:05.500010 12345 solver.cpp:295] Learning Rate Policy: fixed
I1130 05:01:05.600000 12345 solver.cpp:351] Iteration 0, Testing net (#0)
I1130 05:01:20.100000 12345 solver.cpp:418]     Test net output #0: loss = 3.04452 (* 1 = 3.04452 loss)
I1130 05:01:20.100020 12345 solver.cpp:418]     Test net output #1: accuracy = 0.0412
I1130 05:01:21.250000 12345 solver.cpp:239] Iteration 0 (0 iter/s, 15.7s/20 iters), loss = 3.04452
I1130 05:01:21.250100 12345 solver.cpp:258]     Train net output #0: loss = 3.04452 (* 1 = 3.04452 loss)
I1130 05:01:21.250200 12345 sgd_solver.cpp:112] Iteration 0, lr = 1e-10
I1130 05:01:41.250000 12345 solver.cpp:239] Iteration 20 (1.00002 iter/s, 20s/20 iters), loss = 2.5
I1130 05:01:41.250100 12345 solver.cpp:258]     Train net output #0: loss = 2.41 (* 1 = 2.41 loss)
I1130 05:01:41.250200 12345 sgd_solver.cpp:112] Iteration 20, lr = 1e-10
I1130 05:02:01.250000 12345 solver.cpp:218] Iteration 40, loss = 1.75
I1130 05:02:01.250200 12345 sgd_solver.cpp:105] Iteration 40, lr = 5e-11
I1130 05:02:01.300000 12345 solver.cpp:464] Snapshotting to binary proto file train_iter_40.caffemodel
I1130 05:02:02.000000 12345 solver.cpp:351] Iteration 40, Testing net (#0)
I1130 05:02:16.100000 12345 solver.cpp:418]     Test net output #0: loss = 1.5 (* 1 = 1.5 loss)
I1130 05:02:16.100020 12345 solver.cpp:418]     Test net output #1: accuracy = 0.75
>>> 2026-11-30 05:02:30.123456 Iteration 40 loss 1.52
>>> 2026-11-30 05:02:30.123500 Iteration 40 overall accuracy 0.8125
>>> 2026-11-30 05:02:30.123600 Iteration 40 mean accuracy 0.42
>>> 2026-11-30 05:02:30.123700 Iteration 40 mean IU 0.3125
>>> 2026-11-30 05:02:30.123800 Iteration 40 fwavacc 0.7
I1130 05:02:31.000000 12345 solver.cpp:310] Optimization Done.
"""


def test_caffe_log_parses_into_metrics_records():
    records = plot.parse_caffe_log(CAFFE_LOG.splitlines())
    train = [r for r in records if r["phase"] == "train"]
    assert [(r["iter"], r["loss"], r["lr"]) for r in train] == [
        (0, 3.04452, 1e-10), (20, 2.5, 1e-10), (40, 1.75, 5e-11)]  # both loss-line forms
    tests = {(r["iter"], r["head"]): r for r in records if r["phase"] == "test"}
    assert tests[(0, "test net #0")] == {"phase": "test", "iter": 0, "head": "test net #0",
                                         "loss": 3.04452, "accuracy": 0.0412, "stage": "voc-fcn32s"}
    assert tests[(40, "test net #0")]["accuracy"] == 0.75
    fcn = tests[(40, "score")]
    assert (fcn["pixel_acc"], fcn["mean_acc"], fcn["mean_iu"], fcn["fw_iu"], fcn["loss"]) == (
        0.8125, 0.42, 0.3125, 0.7, 1.52)
    assert {r["stage"] for r in records} == {"voc-fcn32s"}  # from "Solving NAME"


def test_caffe_log_plots_like_metrics(tmp_path):
    log = tmp_path / "caffe.log"
    log.write_text(CAFFE_LOG)
    out = tmp_path / "curves.png"
    jsonl = tmp_path / "parsed.jsonl"
    assert plot.main([str(log), "-o", str(out), "--jsonl", str(jsonl)]) == 0
    parsed = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert parsed == plot.parse_caffe_log(CAFFE_LOG.splitlines())
    _check_png(out)
    # the parsed records read back as a metrics.jsonl give the same stages
    again = plot.stages_of([jsonl])
    assert [(s.label, len(s.train), len(s.tests)) for s in again] == [("voc-fcn32s", 3, 3)]


def _check_png(path):
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    assert img.shape[0] >= 500 and img.shape[1] >= 600
    assert img.std() > 10  # drawn on, not a blank canvas
    assert (img < 100).mean() > 0.005  # dark ink: axes, curves, text


def _metrics(path, stage, losses, tests, start=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"stage": stage, "phase": "start", "iter": start, "backend": "torch"}]
    lines += [{"stage": stage, "phase": "train", "iter": start + 10 * (k + 1), "loss": v,
               "lr": 1e-3} for k, v in enumerate(losses)]
    lines += [{"stage": stage, "phase": "test", "head": "score", "iter": it, "mean_iu": iu,
               "pixel_acc": 0.9, "loss": 0.1} for it, iu in tests]
    with path.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)


def test_run_folder_stages_end_to_end(tmp_path):
    import os
    first = tmp_path / "models" / "a-fcn32s" / "snapshot" / "metrics.jsonl"
    second = tmp_path / "models" / "a-fcn16s" / "snapshot" / "metrics.jsonl"
    _metrics(first, "fcn32s", [1.0, 0.8, 0.6], [(30, 0.3)])
    _metrics(second, "fcn16s", [0.5, 0.4], [(20, 0.5)])
    os.utime(first, (1, 1))  # written first: first stage, though its name sorts later
    stages = plot.stages_of(plot.run_files(tmp_path))
    assert [(s.label, s.offset, s.end) for s in stages] == [("fcn32s", 0, 30), ("fcn16s", 30, 50)]
    out = plot.plot_run(tmp_path)
    assert out == tmp_path / plot.PLOT_FILE
    _check_png(out)


def test_restart_replaces_later_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _metrics(path, "s", [1.0, 0.9, 0.8, 0.7], [(40, 0.2)])  # iterations 10..40
    _metrics(path, "s", [0.5, 0.4], [], start=20)  # resumed from the iteration-20 snapshot
    (stage,) = plot.stages_of([path])
    assert [(r["iter"], r["loss"]) for r in stage.train] == [(10, 1.0), (20, 0.9), (30, 0.5),
                                                              (40, 0.4)]
    assert stage.tests == []  # the test at 40 belonged to the replaced iterations


def test_smoothing_is_a_trailing_mean():
    assert plot._smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_unreadable_inputs_are_one_error(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("not a log at all\n")
    with pytest.raises(FcnkitError, match="no training records"):
        plot.plot_run(log)
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"phase": "train", "iter": 1}\n{oops\n')
    with pytest.raises(FcnkitError, match=r"metrics.jsonl:2: not a JSON record"):
        plot.plot_run(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FcnkitError, match="no metrics.jsonl"):
        plot.plot_run(tmp_path / "empty")
    assert not list(tmp_path.glob("*.png"))


def test_solve_py_draws_the_curves_when_training_ends(tmp_path, capsys):
    import solve
    from solve_helpers import one_thread, tiny_models

    model = tiny_models(tmp_path, iters=(2, 2, 2))[0].parent
    with one_thread():
        assert solve.main([str(model), "--iters", "1", "--quiet"]) == 0
    png = model / "snapshot" / plot.PLOT_FILE
    assert f"training curves: {png}" in capsys.readouterr().out
    _check_png(png)
    (stage,) = plot.stages_of([model / "snapshot" / plot.METRICS_FILE])
    assert [r["iter"] for r in stage.tests] == [1]  # the test at the end
