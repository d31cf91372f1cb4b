"""The contract every engine layer follows, the registry, and the option checks they share.

A layer is built once from its LayerParameter (options parsed and validated there, so a bad
prototxt fails at load time, naming the layer and field), asked for its learnable blobs once
the shapes of its bottoms are known, then run as a pure function of torch tensors: autograd
supplies the backward pass. Options the engine does not implement raise FcnkitError rather
than being ignored: each layer class lists the fields it understands.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from netgen.errors import FcnkitError
from surgery.fillers import fill

FLT_MIN = 1.175494350822287508e-38   # C's FLT_MIN, Caffe's clamp on probabilities
FLT_MAX = 3.402823466385288598e38

# LayerParameter fields the Net itself handles for every layer type.
NET_FIELDS = frozenset({"name", "type", "bottom", "top", "phase", "loss_weight", "param",
                        "blobs", "propagate_down", "include", "exclude"})


@dataclass
class BuildContext:
    """What a layer may know about the net it is built into."""
    phase: str                    # "TRAIN" or "TEST"
    dtype: torch.dtype = torch.float32
    allow_python_modules: bool = False
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # fillers


@dataclass
class Run:
    """One pass through the net: `meta` passes only propagate shapes (no side effects)."""
    meta: bool
    train: bool
    device: torch.device
    dtype: torch.dtype
    overwrite: bool = False   # layers marked in_place may overwrite their bottom this pass
    channels_last: bool = False  # convolutions take (and so give) channels-last activations


@dataclass
class ParamInit:
    """Shape of one learnable blob and how to fill it (a FillerParameter or a constant)."""
    shape: tuple[int, ...]
    filler: Any = None            # FillerParameter; None -> constant `value`
    value: float = 0.0

    def make(self, where: str, rng: np.random.Generator) -> torch.Tensor:
        """A CPU tensor of the initial values (FcnkitError naming `where` on a bad filler)."""
        if self.filler is None:
            return torch.full(self.shape, self.value, dtype=torch.float32)
        try:
            return torch.from_numpy(fill(self.filler, self.shape, rng))
        except FcnkitError as e:
            raise FcnkitError(f"{where}: {e}") from None


LAYERS: dict[str, type["Layer"]] = {}


def register(cls: type["Layer"]) -> type["Layer"]:
    """Class decorator: make `cls` the implementation of Caffe type `cls.type`."""
    LAYERS[cls.type] = cls
    return cls


class Layer:
    """Base class. Subclasses set `type`, `fields`, bottom/top counts and implement forward().

    fields: {"<x>_param": {supported sub-fields}}; any other field set in the prototxt is
    an error. bottoms/tops: (min, max) counts, max None for unbounded.
    """
    type: ClassVar[str]
    fields: ClassVar[dict[str, frozenset[str] | set[str]]] = {}
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    is_loss: ClassVar[bool] = False     # top 0 weighs 1 in the objective; runs in float32
    host_tops: ClassVar[bool] = False   # tops are host blobs the layer writes (data layers)
    # set by the Net when the prototxt computes this layer in place and nothing else needs
    # the bottom's value (see Net._mark_in_place); honoured when run.overwrite is on
    in_place: bool = False

    def __init__(self, lp, ctx: BuildContext):
        self.lp = lp
        self.name = lp.name
        self.ctx = ctx
        self._check_counts("bottom", len(lp.bottom), self.bottoms)
        self._check_counts("top", len(lp.top), self.tops)
        self._check_fields()

    # ---- messages -------------------------------------------------------------------
    def error(self, msg: str) -> FcnkitError:
        return FcnkitError(f"layer {self.name!r} ({self.type}): {msg}")

    def _check_counts(self, what: str, n: int, limits: tuple[int, int | None]) -> None:
        lo, hi = limits
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
            raise self.error(f"takes {want} {what}(s), got {n}")

    def _check_fields(self) -> None:
        for fd, value in self.lp.ListFields():
            if fd.name in NET_FIELDS:
                continue
            allowed = self.fields.get(fd.name)
            if allowed is None:
                raise self.error(f"{fd.name} is not supported by {self.type} layers")
            for sub, _ in value.ListFields():
                if sub.name not in allowed:
                    raise self.error(f"{fd.name}.{sub.name} is not supported")

    # ---- shared option helpers --------------------------------------------------------
    def axis(self, axis: int, ndim: int, what: str = "axis", *, allow_end: bool = False) -> int:
        """Caffe's CanonicalAxisIndex: negative counts from the end; out of range is an error."""
        top = ndim + 1 if allow_end else ndim
        a = axis + ndim if axis < 0 else axis
        if not 0 <= a < top:
            raise self.error(f"{what} {axis} out of range for a {ndim}-axis bottom")
        return a

    # ---- the contract ------------------------------------------------------------------
    def param_inits(self, shapes: Sequence[tuple[int, ...]]) -> list[ParamInit]:
        """Learnable blobs given the bottom shapes (called once, at net construction)."""
        return []

    def forward(self, bottoms: list[torch.Tensor], params: list[torch.Tensor],
                run: Run) -> list[torch.Tensor]:
        raise NotImplementedError


def pair(name: str, layer: Layer, values: Sequence[int], h_w: tuple[bool, int, int] | None,
         default: int) -> tuple[int, int]:
    """Resolve a repeated 2-D option (kernel_size, stride, pad, dilation) and its _h/_w form.

    h_w = (given, h, w) for the explicit form; `values` has 0 (-> default), 1 or 2 entries.
    """
    if h_w is not None and h_w[0]:
        if len(values):
            raise layer.error(f"give either {name} or {name}_h/{name}_w, not both")
        return h_w[1], h_w[2]
    if len(values) == 0:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise layer.error(f"{name} has {len(values)} values; only 2-D (1 or 2 values) is supported")


ENGINE = "engine"  # the engine choice (CAFFE/CUDNN) does not change results: always accepted
