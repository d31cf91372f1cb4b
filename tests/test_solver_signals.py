"""SIGINT / SIGHUP sent to a real training process: Caffe's effects, clean exit, whole files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from netgen.proto import caffe_pb2
from solver_helpers import HERE, linear_net_text
from surgery.caffemodel import load_weights

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

SCRIPT = textwrap.dedent("""
    import sys
    from solvers.engine.solver import Solver
    solver = Solver(sys.argv[1], allow_python_modules=True)
    solver.solve(callback=lambda it, *_: print("iter", it, flush=True))
    print("stopped" if solver.requested_early_exit else "done", solver.iter, flush=True)
""")


def start(tmp_path, max_iter=100000):
    (tmp_path / "train.prototxt").write_text(linear_net_text(sleep=0.02))
    (tmp_path / "solver.prototxt").write_text(
        f'train_net: "train.prototxt" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 '
        f'max_iter: {max_iter} snapshot_prefix: "snap"')
    (tmp_path / "train.py").write_text(SCRIPT)
    repo = HERE.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), str(HERE)]))
    return subprocess.Popen([sys.executable, str(tmp_path / "train.py"),
                             str(tmp_path / "solver.prototxt")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_iteration(proc, n: int) -> None:
    for line in proc.stdout:
        if line.startswith("iter") and int(line.split()[1]) >= n:
            return
    raise AssertionError(f"training ended early: {proc.stderr.read()}")


def snapshots(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("snap"))


def test_sighup_snapshots_sigint_snapshots_and_stops(tmp_path):
    """One process (starting one costs seconds): SIGHUP at iteration 2 snapshots and training
    goes on; SIGINT later stops it cleanly after a snapshot (snapshot_after_train)."""
    proc = start(tmp_path)
    wait_for_iteration(proc, 2)
    proc.send_signal(signal.SIGHUP)
    wait_for_iteration(proc, 6)
    hup = [n for n in snapshots(tmp_path) if n.endswith(".solverstate")]
    assert len(hup) == 1
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    last = out.strip().splitlines()[-1].split()
    assert last[0] == "stopped"
    n = int(last[1])
    assert n > int(hup[0].split("_")[-1].split(".")[0]) >= 3
    assert f"snap_iter_{n}.solverstate" in snapshots(tmp_path) and len(snapshots(tmp_path)) == 4
    state = caffe_pb2.SolverState.FromString((tmp_path / f"snap_iter_{n}.solverstate").read_bytes())
    assert state.iter == n and len(state.history) == 4
    assert set(load_weights(tmp_path / f"snap_iter_{n}.caffemodel")) == {"ip1", "ip2"}


def test_step_driven_by_the_caller_stops_between_iterations():
    """handling_signals() for callers looping over step(1): SIGINT ends the loop after the
    iteration under way; a second SIGINT (say, during the final snapshot) aborts at once."""
    import torch

    from solver_helpers import net_param, solver_param
    from solvers.engine.solver import Solver

    sp = solver_param('base_lr: 0.01 lr_policy: "fixed" max_iter: 100 snapshot_after_train: false')
    sp.train_net_param.CopyFrom(net_param(linear_net_text()))
    torch.manual_seed(0)
    solver = Solver(sp, allow_python_modules=True)
    previous = signal.getsignal(signal.SIGINT)
    with solver.handling_signals():
        for i in range(10):
            if i == 3:
                os.kill(os.getpid(), signal.SIGINT)
            solver.step(1)
            if solver.requested_early_exit:
                break
        assert (solver.iter, solver.requested_early_exit) == (4, True)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
