"""fcnkit's PyTorch engine: Caffe nets (Net) and Caffe's solvers (Solver) with Caffe's exact semantics."""
from __future__ import annotations

from .blob import Blob, Param
from .layers import LAYERS
from .net import LayerRecord, Net
from .solver import Solver

__all__ = ["Blob", "LAYERS", "LayerRecord", "Net", "Param", "Solver"]
