"""fcnkit's PyTorch engine behind the same few functions as solvers/caffe_backend.py.

The engine's Solver and Net already speak pycaffe (solver.net.params, copy_from, step,
snapshot, restore); what differs is only how a device is named and how a test net is tied
to the trained weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

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


def world_size() -> int:
    """Processes in this run: torchrun sets WORLD_SIZE; 1 for a plain `python solve.py`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_process_group(gpu: int | None) -> int | None:
    """Under torchrun, join the process group (nccl on GPUs, gloo on CPUs) and give this
    process its own GPU: --gpu G means GPUs G, G+1, ... for local ranks 0, 1, ..."""
    if world_size() == 1:
        return gpu
    if gpu is not None:
        gpu += int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(device(gpu))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu is not None else "gloo")
    return gpu


def make_solver(solver_path: Path, gpu: int | None, amp: str | None = None) -> Any:
    """The engine's Solver; amp "bf16"/"fp16" runs the nets under autocast (see Solver)."""
    from .engine.solver import Solver

    return Solver(str(solver_path), device=device(join_process_group(gpu)), amp=amp)


def seed_iteration(solver: Any, it: int) -> None:
    """With the solver's random_seed set, seed torch (dropout masks) from (random_seed, rank,
    iteration) before each iteration: a resumed run draws exactly what an uninterrupted one
    draws. Without a seed torch's stream just goes on (a resumed run draws anew)."""
    seed = solver.param.random_seed
    if seed >= 0:
        state = np.random.SeedSequence([seed, solver.rank, it]).generate_state(1, np.uint64)
        torch.manual_seed(int(state[0]))


def test_net(solver: Any) -> Any:
    """The first test net, sharing the trained weights (as Caffe's Solver::Test does)."""
    net = solver.test_nets[0]
    net.share_weights(solver.net)
    return net


def load_net(deploy: Path, weights: Path, gpu: int | None, amp: str | None = None) -> Any:
    """A TEST-phase net with trained weights, for inference (amp: "bf16"/"fp16" autocast)."""
    from .engine.net import Net

    return Net(str(deploy), "TEST", weights=str(weights), device=device(gpu), amp=amp)


def set_data(blob: Any, array: Any) -> None:
    """Overwrite a param's values (assignment writes through on every device)."""
    blob.data = array
