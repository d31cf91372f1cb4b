"""Data-parallel training: 2 gloo processes on half batches equal 1 process on the full batch.

EuclideanLoss divides by each process's own batch size, so averaging the two processes'
gradients (Caffe's multi-GPU rule: sum, then 1/solver_count) gives the full batch's gradient.
"""
from __future__ import annotations

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from solver_helpers import linear_net_text, net_param, solver_param
from solvers.engine.solver import Solver

SOLVER = ('base_lr: 0.05 lr_policy: "step" gamma: 0.5 stepsize: 2 momentum: 0.9 '
          'weight_decay: 0.01 max_iter: 5 snapshot: 5 random_seed: 7 snapshot_prefix: "{}/snap"')


def train(folder: str, rows: tuple[int, int] | None) -> tuple[Solver, list[np.ndarray]]:
    """Solve; returns the solver and its weights before training."""
    sp = solver_param(SOLVER.format(folder))
    options = {} if rows is None else {"rows": rows}
    sp.train_net_param.CopyFrom(net_param(linear_net_text(batch=4, **options)))
    solver = Solver(sp, allow_python_modules=True)
    initial = [p.data.copy() for p in solver.net.learnable_params()]
    solver.solve()
    return solver, initial


def worker(rank: int, init_file: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        solver, initial = train(folder, rows=(2 * rank, 2 * rank + 2))
        assert (solver.rank, solver.world_size) == (rank, 2)
        np.savez(f"{folder}/rank{rank}.npz", *[p.data for p in solver.net.learnable_params()],
                 initial=initial[0])
    finally:
        dist.destroy_process_group()


def test_two_processes_on_half_batches_equal_one_on_the_full_batch(tmp_path):
    (tmp_path / "dp").mkdir()
    (tmp_path / "single").mkdir()
    single, _ = train(str(tmp_path / "single"), rows=None)
    # fork after a first Net: the children reuse the parent's imported torch modules
    # (spawning would import them again, seconds per process)
    mp.start_processes(worker, args=(str(tmp_path / "init"), str(tmp_path / "dp")), nprocs=2,
                       join=True, start_method="fork")
    expected = [p.data for p in single.net.learnable_params()]
    ranks = [np.load(tmp_path / "dp" / f"rank{r}.npz") for r in (0, 1)]
    for i, want in enumerate(expected):
        r0, r1 = ranks[0][f"arr_{i}"], ranks[1][f"arr_{i}"]
        assert np.array_equal(r0, r1)  # every process applied the same update
        np.testing.assert_allclose(r0, want, rtol=1e-5, atol=1e-7)
    # random_seed + rank gave the processes different initial weights: agreeing with the single
    # process (seeded like rank 0) shows rank 0's weights were broadcast before training
    assert not np.array_equal(ranks[0]["initial"], ranks[1]["initial"])
    # rank 0 alone wrote the snapshot
    assert sorted(p.name for p in (tmp_path / "dp").iterdir() if p.name.startswith("snap")) == [
        "snap_iter_5.caffemodel", "snap_iter_5.solverstate"]
