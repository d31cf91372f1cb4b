"""Data-parallel training across torch.distributed processes, as Caffe's multi-GPU solver.

Every process runs the same solver on its own share of the data. Before the first update,
rank 0's weights and history are broadcast (Caffe seeds each solver with random_seed + rank,
then broadcasts the root's parameters). After each forward/backward, gradients are summed
with all_reduce and scaled by 1/world_size: Caffe's P2PSync/NCCL sum then divide by
solver_count, because each process's loss is already normalised over its own batch. Every
process then applies the same update, so weights stay identical without further traffic.
Rank 0 alone tests and writes snapshots. Works with any backend (gloo on CPU, nccl on CUDA).

The loss and a stop request travel in the same reductions, so all processes take the same
decision on a NaN loss or a SIGINT and none is left waiting in a collective.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist


class Replicas:
    """The process group the solver trains in (a single process when none is initialised)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.size = dist.get_world_size() if self.active else 1
        self.device = torch.device(device)   # where this process's solver computes

    @property
    def root(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Give every process rank 0's values of `tensors` (in place)."""
        if not self.parallel:
            return
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def reduce_gradients(self, grads: Sequence[torch.Tensor], loss: float) -> float:
        """Average `grads` over processes in place; return the sum of the processes' losses
        (non-finite when any process's loss is)."""
        if not self.parallel:
            return loss
        with torch.no_grad():
            device = grads[0].device if grads else self._buffer_device()
            flat = torch.cat([g.reshape(-1) for g in grads]
                             + [torch.tensor([loss], dtype=grads[0].dtype if grads else
                                             torch.float32, device=device)])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            total = float(flat[-1])
            flat = flat[:-1].mul_(1.0 / self.size)
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
        return total

    def agree(self, code: int) -> int:
        """The largest `code` any process holds (used for stop/snapshot requests)."""
        if not self.parallel:
            return code
        t = torch.tensor([code], dtype=torch.int64, device=self._buffer_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def _buffer_device(self) -> torch.device:
        """Where a small collective buffer must live: NCCL moves only CUDA tensors, and each
        process must use its own GPU (the solver's device, not whichever is current)."""
        if dist.get_backend() != "nccl":
            return torch.device("cpu")
        return self.device if self.device.type == "cuda" else torch.device("cuda")
