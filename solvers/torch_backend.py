"""fcnkit's PyTorch engine behind the same few functions as solvers/caffe_backend.py.

The engine's Solver and Net already speak pycaffe (solver.net.params, copy_from, step,
snapshot, restore); what differs is only how a device is named and how a test net is tied
to the trained weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from netgen.errors import FcnkitError

NAME = "torch"


def available() -> bool:
    return True


def device(gpu: int | None) -> str:
    """"cpu", or "cuda:<gpu>" after checking that this torch build sees that GPU."""
    if gpu is None:
        return "cpu"
    if not torch.cuda.is_available():
        raise FcnkitError(f"--gpu {gpu}: this torch build sees no CUDA GPU "
                          f"(torch {torch.__version__}); leave out --gpu to run on the CPU")
    count = torch.cuda.device_count()
    if not 0 <= gpu < count:
        raise FcnkitError(f"--gpu {gpu}: no such GPU (this machine has {count}: 0..{count - 1})")
    return f"cuda:{gpu}"


def check_gpu(gpu: int | None) -> None:
    """FcnkitError now (before anything is written) when `gpu` cannot be used."""
    device(gpu)


def make_solver(solver_path: Path, gpu: int | None) -> Any:
    from .engine.solver import Solver

    return Solver(str(solver_path), device=device(gpu))


def test_net(solver: Any) -> Any:
    """The first test net, sharing the trained weights (as Caffe's Solver::Test does)."""
    net = solver.test_nets[0]
    net.share_weights(solver.net)
    return net


def load_net(deploy: Path, weights: Path, gpu: int | None) -> Any:
    """A TEST-phase net with trained weights, for inference."""
    from .engine.net import Net

    return Net(str(deploy), "TEST", weights=str(weights), device=device(gpu))


def set_data(blob: Any, array: Any) -> None:
    """Overwrite a param's values (assignment writes through on every device)."""
    blob.data = array
