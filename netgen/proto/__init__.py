"""fcnkit's own compiled copy of Caffe's schema: `from netgen.proto import caffe_pb2`.

Package `fcnkit.caffe`, registered as "fcnkit_caffe.proto", so it coexists with pycaffe.
Loaded lazily so that `python -m netgen.proto.regenerate` works even when the generated
module is missing or broken.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["caffe_pb2"]


def __getattr__(name: str) -> ModuleType:
    if name == "caffe_pb2":
        module = importlib.import_module(".fcnkit_caffe_pb2", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
