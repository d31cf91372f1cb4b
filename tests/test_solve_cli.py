"""solve.py as a user runs it: the demo end to end on tiny data, and every bad input refused
with one error line, a non-zero exit and nothing written."""
from __future__ import annotations

import importlib.util
import json

import pytest
from PIL import Image

import solve
from solve_helpers import files_under, run_script, tiny_models

HAS_CAFFE = importlib.util.find_spec("caffe") is not None


def test_demo_end_to_end_tiny(tmp_path):
    """`python solve.py` with the demo shrunk to 4 training images of 32x32 and 2 iterations
    per stage: data, three model folders, snapshots, metrics, overlays, summary."""
    out = tmp_path / "demo"
    proc = run_script("solve.py", "--demo-dir", str(out), "--demo-train", "4", "--demo-val",
                      "2", "--demo-size", "32", "--iters", "2", "--backend", "torch", "--quiet",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "background only" in proc.stdout and "FCN-8s" in proc.stdout
    assert len(list((out / "data" / "JPEGImages").glob("*.jpg"))) == 6
    for stage in ("32s", "16s", "8s"):
        snap = out / "models" / f"synthetic-fcn{stage}" / "snapshot"
        assert (snap / "train_iter_2.caffemodel").is_file()
        assert (snap / "train_iter_2.solverstate").is_file()
        records = [json.loads(line) for line in (snap / "metrics.jsonl").read_text().splitlines()]
        tests = [r for r in records if r["phase"] == "test"]
        assert tests and tests[-1]["iter"] == 2 and 0 <= tests[-1]["mean_iu"] <= 1
    assert (out / "models" / "synthetic-fcn16s" / "snapshot" /
            "init-from-fcn32s.caffemodel").is_file()
    overlays = sorted((out / "overlays").glob("*_overlay.png"))
    assert len(overlays) == 2
    with Image.open(overlays[0]) as im:
        assert im.height >= 32 and im.width > 32  # legend to the right of the image
    panels = sorted((out / "overlays").glob("*_compare.png"))
    assert len(panels) == 2 and [str(p) for p in panels] == summary_overlays(out)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["32s", "16s", "8s"]
    assert 0 < summary["baseline_mean_iu"] < 1


def summary_overlays(out):
    return sorted(json.loads((out / "summary.json").read_text())["overlays"])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    return tiny_models(folder, iters=(1, 1, 1))[0].parent


def _fails(capsys, argv, pattern, model_dir):
    before = files_under(model_dir.parent.parent)
    with pytest.raises(SystemExit) as e:
        solve.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert pattern in err, err
    assert files_under(model_dir.parent.parent) == before, "a failed run must write nothing"


@pytest.mark.parametrize("args,pattern", [
    (["{parent}/no-such-model"], "no such folder"),
    (["{model}", "--weights", "{parent}/missing.caffemodel"], "missing.caffemodel: no such file"),
    (["{model}", "--resume", "{parent}/missing.solverstate"], "no such file"),
    (["{model}", "--stages", "16s,32s"], "--stages"),
    (["{model}", "--stages", "32s,16s,4s"], "synthetic-fcn4s"),
    (["{model}", "--backend", "tensorflow"], "unknown backend 'tensorflow'"),
    (["{model}", "--iters", "ten"], "--iters"),
    (["{model}", "--iters", "1,2"], "--iters"),
    (["{model}", "--demo-train", "3"], "demo options"),
    (["{model}", "--resume", "{model}/solver.prototxt", "--stages", "32s,16s"], "--resume"),
    (["--weights", "{model}/solver.prototxt"], "demo"),
])
def test_bad_input(capsys, model, args, pattern):
    argv = [a.format(model=model, parent=model.parent) for a in args]
    _fails(capsys, argv, pattern, model)


@pytest.mark.skipif(HAS_CAFFE, reason="pycaffe is installed: the caffe backend is available")
def test_caffe_backend_without_pycaffe(capsys, model):
    _fails(capsys, [str(model), "--backend", "caffe"], "needs pycaffe", model)


def test_gpu_without_cuda(capsys, model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    _fails(capsys, [str(model), "--backend", "torch", "--gpu", "0"], "no CUDA GPU", model)


def test_script_reports_one_line(tmp_path):
    proc = run_script("solve.py", str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: model {tmp_path / 'nothing-here'}: no such folder or file"]
    assert list(tmp_path.iterdir()) == []


def test_corrupt_weights_are_an_error_not_a_crash(tmp_path, capsys):
    model_dir = tiny_models(tmp_path, iters=(1, 1, 1))[0].parent
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    with pytest.raises(SystemExit) as e:
        solve.main([str(model_dir), "--weights", str(bad), "--backend", "torch", "--quiet"])
    assert e.value.code == 2
    assert "bad.caffemodel" in capsys.readouterr().err
    assert not list((model_dir / "snapshot").glob("*.caffemodel"))


def test_ctrl_c_snapshots_and_the_run_resumes(tmp_path):
    """SIGINT mid-training: exit 130 after writing a snapshot and printing the command that
    continues; --resume (its latest snapshot) continues from it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from solve_helpers import ROOT

    model_dir = tiny_models(tmp_path, iters=(100000, 1, 1))[0].parent  # no interval snapshot
    metrics = model_dir / "snapshot" / "metrics.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "solve.py"), str(model_dir), "--iters",
                             "100000", "--test-every", "0", "--backend", "torch", "--quiet"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not metrics.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
    states = sorted((model_dir / "snapshot").glob("train_iter_*.solverstate"),
                    key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert len(states) == 1, "the interrupted run must leave its snapshot"
    stopped = int(states[-1].stem.rsplit("_", 1)[1])
    command = err.strip().splitlines()[-2].split()
    assert command[:2] == ["to", "continue:"] and command[4:] == [
        str(model_dir), "--resume", str(states[-1])]
    proc = run_script("solve.py", str(model_dir), "--resume", "--iters", "1",  # latest state
                      "--test-every", "0", "--backend", "torch", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (model_dir / "snapshot" / f"train_iter_{stopped + 1}.caffemodel").is_file()
