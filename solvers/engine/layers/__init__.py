"""Engine layer implementations, one class per Caffe type, found through the LAYERS registry."""
from __future__ import annotations

from . import common, data, loss, neuron, reduce, vision  # noqa: F401  (modules register their layers)
from .base import LAYERS, BuildContext, Layer, ParamInit, Run, register

__all__ = ["LAYERS", "BuildContext", "Layer", "ParamInit", "Run", "register"]
