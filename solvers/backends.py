"""Pick the backend a run uses: pycaffe ("caffe"), fcnkit's PyTorch engine ("torch"), or "auto".

Both backend modules expose the same functions (available, check_gpu, make_solver, test_net,
set_data, load_net), so the training loop and inference never branch on the backend.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from netgen.errors import FcnkitError

MODULES = {"caffe": "solvers.caffe_backend", "torch": "solvers.torch_backend"}
CHOICES = ("auto", *MODULES)


def resolve(name: str) -> ModuleType:
    """The backend module for `name`; "auto" is pycaffe when it imports, else the torch engine.

    Asking for "caffe" without pycaffe is an error (FcnkitError naming the import problem).
    """
    if name not in CHOICES:
        raise FcnkitError(f"unknown backend {name!r} (choose from {', '.join(CHOICES)})")
    if name == "auto":
        caffe = importlib.import_module(MODULES["caffe"])
        return caffe if caffe.available() else importlib.import_module(MODULES["torch"])
    module = importlib.import_module(MODULES[name])
    if name == "caffe":
        module.import_caffe()  # raises the explanatory FcnkitError when pycaffe is missing
    return module
