"""solve.py under torchrun: data-parallel training through torch.distributed (gloo on CPU).

Rank r of W takes items r, r+W, ... of the data layer's order, and gradients are combined as
Caffe's multi-GPU solver does (sum over ranks times 1/W). So two ranks with batch 1 must end with
the weights of one process with iter_size 2 (gradients of two images averaged) on the same order.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import numpy as np

from solve_helpers import ROOT, tiny_models, weights


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_iter_size(model, n: int) -> None:
    solver = model / "solver.prototxt"
    text = solver.read_text()
    assert "iter_size: 1\n" in text
    solver.write_text(text.replace("iter_size: 1\n", f"iter_size: {n}\n"))


def _solve(model, nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}"] if nproc > 1 else [sys.executable]
    return subprocess.run([*launcher, str(ROOT / "solve.py"), str(model), "--backend", "torch",
                           "--iters", "2", "--test-every", "0", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=240)


def test_two_ranks_train_like_one_process(tmp_path):
    single = tiny_models(tmp_path / "one")[0].parent
    double = tmp_path / "two" / "models" / single.name
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    _set_iter_size(single, 2)
    for model, nproc in ((single, 1), (double, 2)):
        run = _solve(model, nproc)
        assert run.returncode == 0, run.stderr[-3000:]
    one = weights(single / "snapshot" / "train_iter_2.caffemodel")
    two = weights(double / "snapshot" / "train_iter_2.caffemodel")
    assert one.keys() == two.keys()
    for layer in one:
        for a, b in zip(one[layer], two[layer]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=layer)
    # rank 0 alone logs: one start record and one train record, not one per rank
    records = (double / "snapshot" / "metrics.jsonl").read_text().splitlines()
    assert sum('"phase": "start"' in r for r in records) == 1
