"""fcnkit's PyTorch engine: Caffe nets (Net) with Caffe's exact layer semantics."""
from __future__ import annotations

from .blob import Blob, Param
from .layers import LAYERS
from .net import LayerRecord, Net

__all__ = ["Blob", "LAYERS", "LayerRecord", "Net", "Param"]
