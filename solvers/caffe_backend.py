"""The reference FCN workflow on real pycaffe (BVLC Caffe's Python interface), in Python 3.

`caffe.set_device` + `caffe.set_mode_gpu` (or CPU), `caffe.get_solver`, `solver.net.copy_from`,
bilinear surgery on `solver.net.params` in place and `solver.step`: the training loop in
solvers/train.py drives this module and solvers/torch_backend.py through the same functions.
Caffe is imported only when one of them runs, so fcnkit installs and works without it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from netgen.errors import FcnkitError

NAME = "caffe"


@functools.cache
def _probe() -> tuple[ModuleType | None, str]:
    """Import pycaffe once: (caffe, "") or (None, why not, in one line).

    Any exception counts, not only ImportError: a `_caffe.so` built against numpy 1.x raises
    SystemError (or prints numpy's ABI warning and raises ImportError) under numpy 2, and a
    half-built install can fail with anything. The import's Python-level stderr chatter is
    held back and shown only when the import succeeds.
    """
    noise = io.StringIO()
    try:
        with contextlib.redirect_stderr(noise):
            import caffe  # noqa: PLC0415 - optional dependency, imported on demand
    except Exception as e:  # noqa: BLE001 - a broken pycaffe must not break the torch backend
        return None, _why(e)
    sys.stderr.write(noise.getvalue())
    if not hasattr(caffe, "get_solver"):
        return None, (f"the module 'caffe' at {getattr(caffe, '__file__', '?')} is not "
                      "pycaffe (no caffe.get_solver)")
    return caffe, ""


def _why(e: BaseException) -> str:
    """One line on a failed `import caffe`: where it is, the error, and the numpy hint."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    message = f"{type(e).__name__}: {lines[0][:200] if lines else '(no message)'}"
    try:
        spec = importlib.util.find_spec("caffe")
    except Exception:  # noqa: BLE001 - a broken package can fail even here
        spec = None
    if spec is None or isinstance(e, ModuleNotFoundError) and e.name == "caffe":
        return (f"pycaffe cannot be imported ({message}); build BVLC Caffe with its Python "
                "interface and add caffe/python to PYTHONPATH")
    where = spec.origin or ", ".join(spec.submodule_search_locations or [])
    hint = ""
    numpy = sys.modules.get("numpy")
    if numpy is not None and int(numpy.__version__.split(".")[0]) >= 2:
        hint = (f"; pycaffe is built against numpy 1.x and this Python has numpy "
                f"{numpy.__version__}: use an environment with numpy<2")
    return f"pycaffe at {where} is broken ({message}){hint}"


def import_caffe() -> ModuleType:
    """pycaffe, or FcnkitError saying in one line why not (missing, broken, not pycaffe) and
    that --backend torch works without it."""
    caffe, why = _probe()
    if caffe is None:
        raise FcnkitError(f"backend 'caffe' needs pycaffe: {why}; or use --backend torch")
    return caffe


def pycaffe() -> ModuleType | None:
    """pycaffe when it imports, else None (never raises: for code that merely adapts to it)."""
    return _probe()[0]


def available() -> bool:
    """True when pycaffe imports."""
    return pycaffe() is not None


def unavailable_reason() -> str:
    """Why pycaffe does not import, in one line ("" when it does): for skip messages."""
    return _probe()[1]


def use_device(gpu: int | None) -> ModuleType:
    """Select CPU mode, or GPU `gpu` (set_device first, as Caffe requires); returns caffe."""
    caffe = import_caffe()
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        check_gpu(gpu)
        caffe.set_device(int(gpu))
        caffe.set_mode_gpu()
    return caffe


@functools.cache
def check_gpu(gpu: int | None) -> None:
    """FcnkitError now when pycaffe cannot use GPU `gpu`: a CPU_ONLY build or a bad index
    make Caffe abort the whole process (glog FATAL), so a child process tries it first and
    its fatal line becomes the message."""
    if gpu is None:
        return
    import_caffe()
    code = f"import caffe; caffe.set_device({int(gpu)}); caffe.set_mode_gpu()"
    env = {**os.environ, "GLOG_minloglevel": "0"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    if proc.returncode != 0:
        fatal = [line for line in proc.stderr.splitlines() if line.startswith(("F", "E"))]
        reason = fatal[-1].split("] ", 1)[-1] if fatal else f"exit status {proc.returncode}"
        raise FcnkitError(f"--gpu {gpu}: pycaffe cannot use it ({reason.strip()}); leave out "
                          "--gpu to run on the CPU")


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
