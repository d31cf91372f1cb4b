"""Kernel, stride, pad and dilation of sliding-window layers, read once with Caffe's rules.

Coordinate maps, shape inference and the explain table all need these four numbers; reading them
in one place keeps Caffe's quirks (kernel_size OR kernel_h/kernel_w, repeated fields holding one
value for every spatial axis or one per axis, Pooling's scalar fields) from drifting apart.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import FcnkitError, FcnkitValueError
from .proto import caffe_pb2

Vec = tuple[int, ...]


def where(layer: caffe_pb2.LayerParameter) -> str:
    """How messages name a layer: "layer conv1 (Convolution)"."""
    return f"layer {layer.name or '?'} ({layer.type})"


@dataclass(frozen=True)
class Window:
    """A sliding window over the axes after `axis`; each Vec holds one value or one per axis."""

    axis: int
    kernel: Vec
    stride: Vec
    pad: Vec
    dilation: Vec

    @property
    def extent(self) -> Vec:
        """Dilated kernel size k_eff = d(k-1)+1, per axis (broadcast)."""
        return tuple((k - 1) * d + 1 for k, d in zip(*broadcast(self.kernel, self.dilation)))

    def per_axis(self, n: int, layer: caffe_pb2.LayerParameter) -> "Window":
        """The same window with exactly `n` values in every field (Caffe's 1-or-n rule)."""
        return Window(self.axis, *(expand(v, n, name, layer) for v, name in
                                   ((self.kernel, "kernel_size"), (self.stride, "stride"),
                                    (self.pad, "pad"), (self.dilation, "dilation"))))


def broadcast(*vecs: tuple) -> list[tuple]:
    """Stretch length-1 tuples to the common length; other lengths must agree."""
    n = max(len(v) for v in vecs)
    if any(len(v) not in (1, n) for v in vecs):
        raise FcnkitValueError(f"spatial values of different lengths {[len(v) for v in vecs]} "
                               "cannot be combined")   # numpy's ValueError in pycaffe's coord_map
    return [v * n if len(v) == 1 else v for v in vecs]


def expand(vec: Vec, n: int, name: str, layer: caffe_pb2.LayerParameter) -> Vec:
    """`vec` as n values: Caffe accepts one value for all spatial axes or exactly one per axis."""
    if len(vec) == n:
        return vec
    if len(vec) == 1:
        return vec * n
    raise FcnkitError(f"{where(layer)}: {name} has {len(vec)} values for {n} spatial axes")


def _pair(param, name: str, layer: caffe_pb2.LayerParameter) -> Vec | None:
    """The (h, w) values of a `<name>_h`/`<name>_w` pair, or None when neither is set."""
    has_h, has_w = param.HasField(name + "_h"), param.HasField(name + "_w")
    if has_h != has_w:
        raise FcnkitError(f"{where(layer)}: {name}_h and {name}_w must be given together")
    return (getattr(param, name + "_h"), getattr(param, name + "_w")) if has_h else None


def _conv_field(param, name: str, pair: str, default: Vec, layer: caffe_pb2.LayerParameter) -> Vec:
    """A repeated convolution field, or its 2-D `<pair>_h`/`<pair>_w` alternative, or default."""
    hw = _pair(param, pair, layer)
    values = tuple(getattr(param, name))
    if hw is not None and values:
        raise FcnkitError(f"{where(layer)}: give {name} OR {pair}_h and {pair}_w, not both")
    return hw or values or default


def conv_window(layer: caffe_pb2.LayerParameter) -> Window:
    """Window of Convolution / Deconvolution / Im2col (convolution_param, Caffe defaults)."""
    p = layer.convolution_param
    kernel = _conv_field(p, "kernel_size", "kernel", (), layer)
    if not kernel:
        raise FcnkitError(f"{where(layer)}: kernel_size (or kernel_h and kernel_w) is required")
    w = Window(p.axis, kernel, _conv_field(p, "stride", "stride", (1,), layer),
               _conv_field(p, "pad", "pad", (0,), layer), tuple(p.dilation) or (1,))
    _check_positive(w, layer)
    return w


def pool_window(layer: caffe_pb2.LayerParameter) -> Window | None:
    """Window of a Pooling layer; None for global pooling (its kernel is the input size)."""
    p = layer.pooling_param
    kernel = _pool_field(p, "kernel", "kernel_size", layer)
    stride = _pool_field(p, "stride", "stride", layer) or (p.stride,)
    pad = _pool_field(p, "pad", "pad", layer) or (p.pad,)
    if p.global_pooling:
        if kernel:
            raise FcnkitError(f"{where(layer)}: global_pooling takes no kernel size")
        if set(pad) != {0} or set(stride) != {1}:
            raise FcnkitError(f"{where(layer)}: global_pooling needs pad 0 and stride 1")
        return None
    if not kernel:
        raise FcnkitError(f"{where(layer)}: kernel_size (or kernel_h and kernel_w) is required")
    w = Window(1, kernel, stride, pad, (1,))
    _check_positive(w, layer)
    if any(q >= k for q, k in zip(*broadcast(pad, kernel))):
        raise FcnkitError(f"{where(layer)}: pad {pad} must be smaller than kernel {kernel}")
    return w


def _pool_field(p, name: str, scalar: str, layer: caffe_pb2.LayerParameter) -> Vec:
    """Pooling's scalar `<scalar>` or its `<name>_h`/`<name>_w` pair; () when neither is set."""
    pair = _pair(p, name, layer)
    if pair is not None and p.HasField(scalar):
        raise FcnkitError(f"{where(layer)}: give {scalar} OR {name}_h and {name}_w, not both")
    return pair or ((getattr(p, scalar),) if p.HasField(scalar) else ())


def _check_positive(w: Window, layer: caffe_pb2.LayerParameter) -> None:
    for name, vec in (("kernel", w.kernel), ("stride", w.stride), ("dilation", w.dilation)):
        if min(vec) <= 0:
            raise FcnkitError(f"{where(layer)}: {name} must be positive, got {list(vec)}")
