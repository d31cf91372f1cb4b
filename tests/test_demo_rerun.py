"""The demo run again, interrupted and resumed: a second run reuses finished stages, Ctrl-C
prints the command that continues, and that command ends where an uninterrupted run ends."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

from netgen.errors import FcnkitError
import solve
from solve_helpers import ROOT, one_thread, weights
from solvers.demo import DemoConfig, run_demo
from solvers.demo_state import RUN_FILE

CONFIG = DemoConfig(train=4, val=2, size=32, overlays=1)
ITERS = (4, 8, 4)
OPTIONS = ["--demo-train", "4", "--demo-val", "2", "--demo-size", "32",
           "--iters", ",".join(map(str, ITERS)), "--test-every", "4", "--backend", "torch",
           "--quiet"]


def final_weights(out):
    stages = json.loads((out / "summary.json").read_text())["stages"]
    return [weights(out / "models" / f"synthetic-fcn{s['stage']}" / "snapshot" /
                    f"train_iter_{s['iter']}.caffemodel") for s in stages]


def scores(out):
    return [s["mean_iu"] for s in json.loads((out / "summary.json").read_text())["stages"]]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run with the settings the interrupted one uses."""
    out = tmp_path_factory.mktemp("straight") / "demo"
    run_demo(out, CONFIG, backend="torch", iters=ITERS, test_every=4, progress=False)
    return out


def test_ctrl_c_then_the_printed_command_ends_as_an_uninterrupted_run(tmp_path, straight,
                                                                     capsys, monkeypatch):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "solve.py"), "--demo-dir", str(out),
                             *OPTIONS], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # interrupt in stage 16s, after its first test
            if line.startswith("[fcn16s] iter"):
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[-1] == "interrupted" and lines[-2].startswith("to continue: ")
    record = json.loads((out / RUN_FILE).read_text())
    assert "32s" in record["stages"] and "8s" not in record["stages"]
    assert not (out / "summary.json").exists()

    command = shlex.split(lines[-2].removeprefix("to continue: "))
    assert command[2:] == ["--resume", "--demo-dir", str(out), "--quiet"]
    assert command[1] == os.path.relpath(ROOT / "solve.py", tmp_path)
    monkeypatch.chdir(tmp_path)
    with one_thread():  # the command, run in this process
        assert solve.main(command[2:]) == 0
    assert "[fcn32s] finished before" in capsys.readouterr().out
    assert scores(out) == scores(straight)
    for resumed, uninterrupted in zip(final_weights(out), final_weights(straight)):
        for name in uninterrupted:
            for x, y in zip(resumed[name], uninterrupted[name]):
                np.testing.assert_array_equal(x, y, err_msg=name)
    metrics = out / "models" / "synthetic-fcn16s" / "snapshot" / "metrics.jsonl"
    tests = [json.loads(l)["iter"] for l in metrics.read_text().splitlines()
             if json.loads(l)["phase"] == "test"]
    assert tests == [4, 8]  # one record per test, none from a discarded run


def test_a_second_run_reuses_other_settings_refused_fresh_starts_over(tmp_path, capsys):
    out = tmp_path / "demo"
    small = dict(backend="torch", iters=(1, 1, 1), progress=False)
    first = run_demo(out, CONFIG, **small)
    snapshot = out / "models" / "synthetic-fcn8s" / "snapshot" / "train_iter_1.caffemodel"
    stamp = snapshot.stat().st_mtime_ns
    capsys.readouterr()
    again = run_demo(out, CONFIG, **small)
    said = capsys.readouterr().out
    assert "finished stages 32s, 16s, 8s are reused" in said and "--fresh" in said
    assert snapshot.stat().st_mtime_ns == stamp  # nothing retrained
    assert [s["mean_iu"] for s in again["stages"]] == [s["mean_iu"] for s in first["stages"]]

    with pytest.raises(FcnkitError, match=r"other settings \(train 4 there, 3 now\).*--fresh"):
        run_demo(out, DemoConfig(train=3, val=2, size=32, overlays=1), **small)
    (out / "overlays" / "stale.png").write_bytes(b"old")
    run_demo(out, DemoConfig(train=3, val=2, size=32, overlays=1), mode="fresh", **small)
    assert not (out / "overlays" / "stale.png").exists()
    assert len(list((out / "data" / "JPEGImages").glob("*.jpg"))) == 5
    assert json.loads((out / RUN_FILE).read_text())["settings"]["config"]["train"] == 3


def test_resume_without_a_run_is_refused(tmp_path):
    with pytest.raises(FcnkitError, match="holds no demo run to continue"):
        run_demo(tmp_path / "none", None, mode="resume")


def test_resume_keeps_the_recorded_settings_under_what_is_given(tmp_path, capsys):
    """`--resume` with another option (here --threads) continues the recorded run (its size,
    counts...) with that option on top, rather than the defaults plus that option."""
    out = tmp_path / "demo"
    run_demo(out, CONFIG, backend="torch", iters=(1, 1, 1), progress=False)
    capsys.readouterr()
    assert solve.main(["--demo-dir", str(out), "--resume", "--threads", str(CONFIG.threads),
                       "--quiet"]) == 0
    assert "finished stages 32s, 16s, 8s are reused" in capsys.readouterr().out


def test_metrics_hold_one_run(tmp_path):
    """A run from scratch starts metrics.jsonl anew; a resume from iteration N keeps the
    records up to N and drops those a later run logged past it."""
    from solvers.train import train
    from solve_helpers import tiny_models

    solver = tiny_models(tmp_path, iters=(3, 1, 1))[0]
    options = dict(backend="torch", test_every=0, progress=False)
    with one_thread():
        first = train(solver, iters=2, **options)
        again = train(solver, iters=3, **options)
        resumed = train(solver, iters=1, resume=first.state, **options)

    def log():
        return [(r["phase"], r["iter"]) for r in map(json.loads, open(again.metrics_path))]
    assert resumed.iter == 3
    assert log() == [("start", 0), ("start", 2), ("train", 3)]


def test_the_time_estimate_measures_and_leaves_the_run_as_it_was(tmp_path):
    """The demo's estimate builds each stage's solver and times passes: a positive time, and
    training afterwards ends with the weights it ends with when nothing was measured."""
    from solvers import torch_backend
    from solvers.demo_plan import duration, estimate_seconds
    from solvers.train import train
    from solve_helpers import tiny_models

    measured = tiny_models(tmp_path / "a", iters=(2, 1, 1))
    plain = tiny_models(tmp_path / "b", iters=(2, 1, 1))
    options = dict(backend="torch", test_every=0, progress=False)
    with one_thread():
        seconds, rate, stage = estimate_seconds(torch_backend, measured, (2, 1, 1),
                                                ("32s", "16s", "8s"), ["8s"], 1, 2, None)
        a = train(measured[0], **options)
        b = train(plain[0], **options)
    assert 0 < rate < seconds and duration(seconds).startswith("about ")
    assert stage == "32s"  # the first stage left to train: its rate is the one reported
    assert sorted(p.name for p in a.weights.parent.iterdir()) == sorted(
        p.name for p in b.weights.parent.iterdir())
    for name, params in weights(b.weights).items():
        for x, y in zip(weights(a.weights)[name], params):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_help_gives_examples_and_the_demo_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        solve.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "examples: python solve.py" in text
    config = DemoConfig()
    for fact in (f"training images (default: {config.train})",
                 f"validation images (default: {config.val})",
                 f"pixels (default: {config.size})",
                 f"the demo: {','.join(map(str, config.iters))})",
                 f"the demo: {config.test_every};", "python solve.py --resume", "--fresh"):
        assert fact in text, fact
