"""Benchmark: the solver on a full-width FCN-32s (VGG16, ~134M parameters), VOC recipe options.

Builds the train net with an Input layer (image SIZE x SIZE, random labels), then measures:
  iteration  one whole solver iteration (forward/backward + update), median of a few
  update     the update alone (SGD momentum 0.99, weight decay 5e-4, FCN recipe), median
  snapshot   writing <prefix>_iter_N.caffemodel + .solverstate, binary and HDF5
  restore    Solver.restore of each (weights + history)
Figures are wall times in seconds plus file sizes; run by hand:

    python bench/bench_solver.py [--size 64] [--device cpu] [--amp bf16] [--iters 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from netgen.fcn import fcn_vgg16  # noqa: E402
from netgen.proto import caffe_pb2  # noqa: E402
from solvers.engine.solver import Solver  # noqa: E402

RECIPE = dict(base_lr=1e-10, lr_policy="fixed", momentum=0.99, weight_decay=5e-4, max_iter=100000,
              display=0, snapshot_after_train=False)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def feed(solver: Solver, size: int, rng: np.random.Generator) -> None:
    solver.net.blobs["data"].data = rng.normal(0, 50, (1, 3, size, size))
    solver.net.blobs["label"].data = rng.integers(0, 21, (1, 1, size, size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fcnkit-bench-solver-"))
    param = caffe_pb2.SolverParameter(snapshot_prefix=str(folder / "train"), **RECIPE)
    param.train_net_param.CopyFrom(fcn_vgg16("train", "32s", input_size=(args.size, args.size)))
    torch.manual_seed(0)
    solver = Solver(param, device=args.device, amp=args.amp)
    count = sum(p.count for p in solver.net.learnable_params())
    print(f"FCN-32s train net: {count / 1e6:.1f}M parameters, input {args.size}x{args.size}, "
          f"device {args.device}, amp {args.amp}")
    rng = np.random.default_rng(0)

    def iteration():
        feed(solver, args.size, rng)
        solver.step(1)

    iteration()  # warm-up
    it_times = [timed(iteration) for _ in range(args.iters)]
    up_times = [timed(lambda: solver._apply_update()) for _ in range(args.iters)]
    print(f"iteration {statistics.median(it_times):.3f} s   update alone "
          f"{statistics.median(up_times):.3f} s")
    for fmt in ("BINARYPROTO", "HDF5"):
        solver.param.snapshot_format = getattr(caffe_pb2.SolverParameter, fmt)
        paths: list[str] = []
        write = timed(lambda: paths.extend(solver.snapshot()))
        sizes = " + ".join(f"{Path(p).stat().st_size / 2**20:.0f} MB" for p in paths)
        read = timed(lambda: solver.restore(paths[1]))
        print(f"snapshot {fmt:11s} write {write:.2f} s, restore {read:.2f} s ({sizes})")
        for p in paths:
            Path(p).unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
