"""The reference FCN workflow on real pycaffe (BVLC Caffe's Python interface), in Python 3.

`caffe.set_device` + `caffe.set_mode_gpu` (or CPU), `caffe.get_solver`, `solver.net.copy_from`,
bilinear surgery on `solver.net.params` in place and `solver.step`: the training loop in
solvers/train.py drives this module and solvers/torch_backend.py through the same functions.
Caffe is imported only when one of them runs, so fcnkit installs and works without it.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from netgen.errors import FcnkitError

NAME = "caffe"


def import_caffe() -> ModuleType:
    """pycaffe, or FcnkitError saying how to get it (or to use the torch backend)."""
    try:
        import caffe  # noqa: PLC0415 - optional dependency, imported on demand
    except ImportError as e:
        raise FcnkitError(
            f"backend 'caffe' needs pycaffe, which cannot be imported ({e}); build BVLC Caffe "
            "with its Python interface and add caffe/python to PYTHONPATH, or use --backend torch"
        ) from None
    if not hasattr(caffe, "get_solver"):
        raise FcnkitError(f"the module 'caffe' at {getattr(caffe, '__file__', '?')} is not "
                          "pycaffe (no caffe.get_solver); use --backend torch")
    return caffe


def available() -> bool:
    """True when pycaffe imports."""
    try:
        import_caffe()
    except FcnkitError:
        return False
    return True


def use_device(gpu: int | None) -> ModuleType:
    """Select CPU mode, or GPU `gpu` (set_device first, as Caffe requires); returns caffe."""
    caffe = import_caffe()
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(int(gpu))
        caffe.set_mode_gpu()
    return caffe


def check_gpu(gpu: int | None) -> None:
    """pycaffe cannot tell how many GPUs there are without selecting one: nothing to check."""


def make_solver(solver_path: Path, gpu: int | None, amp: str | None = None) -> Any:
    """caffe.get_solver on the file (the solver type comes from the prototxt)."""
    if amp is not None:
        raise FcnkitError(f"--amp {amp}: mixed precision is an option of the torch backend; "
                          "pycaffe trains in float32")
    caffe = use_device(gpu)
    return caffe.get_solver(str(solver_path))


def test_net(solver: Any) -> Any:
    """The first test net, sharing the trained weights (Caffe does this inside Solver::Test)."""
    net = solver.test_nets[0]
    net.share_with(solver.net)
    return net


def load_net(deploy: Path, weights: Path, gpu: int | None) -> Any:
    """A TEST-phase net with trained weights, for inference."""
    caffe = use_device(gpu)
    return caffe.Net(str(deploy), str(weights), caffe.TEST)


def set_data(blob: Any, array: Any) -> None:
    """Overwrite a blob's values (pycaffe's `.data` is a writable view)."""
    blob.data[...] = array
