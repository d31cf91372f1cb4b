"""Which input pixels each output pixel of a net reads: exact intervals, per spatial axis.

Cell i of a blob depends on the input pixels [scale * i + lo, scale * i + hi] (per axis H, W;
input coordinates, exact fractions), by Caffe's window rules: a Convolution or Pooling cell i
reads bottom cells s*i - p ... s*i - p + k_eff - 1 (ceil-mode pooling and padding included:
the interval counts the whole window), a Deconvolution cell j is written by the bottom cells i
with s*i - p <= j <= s*i - p + k_eff - 1, Crop shifts by its offset and a pointwise layer
joining branches (Eltwise, Concat of equal grids) takes the union. The interval says where the
pixels sit relative to the output pixel, which is what tiling needs (solvers.tiles): FCN's pad
100 and Crop offsets make it asymmetric. It is exact, so it can be wider than `explain`'s
receptive-field column, which follows the usual per-layer formula (for FCN-8s at 500x500:
491 vs 460 pixels for `score`).

The period is the smallest input shift that moves every blob on the way by whole cells (the
lcm of the input pixels per cell): a window of the image that starts on a multiple of it puts
every layer's grid where the whole image puts it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from .coord_map import PASS_THROUGH, RULES, BlobGraph, walked_bottoms
from .errors import FcnkitError
from .geometry import broadcast, where
from .proto import caffe_pb2

Pair = tuple[Fraction, Fraction]  # (H, W)


@dataclass(frozen=True)
class Reach:
    """Input interval of a blob's cells: cell i reads input pixels scale*i+lo .. scale*i+hi,
    per axis (H, W); `period` (H, W) as in the module docstring."""

    scale: Pair
    lo: Pair
    hi: Pair
    period: tuple[int, int]

    @property
    def before(self) -> tuple[int, int]:
        """Input pixels before a unit-scale cell that it reads (ceil(-lo), at least 0)."""
        return tuple(max(0, math.ceil(-x)) for x in self.lo)  # type: ignore[return-value]

    @property
    def after(self) -> tuple[int, int]:
        """Input pixels after a unit-scale cell that it reads (ceil(hi), at least 0)."""
        return tuple(max(0, math.ceil(x)) for x in self.hi)  # type: ignore[return-value]


NOT_LOCAL = frozenset({"MVN"})  # pass-through for coordinates, but reads the whole image


def _hw(values: tuple, layer: caffe_pb2.LayerParameter) -> tuple:
    if len(values) not in (1, 2):
        raise FcnkitError(f"{where(layer)}: tiling handles 2-D windows, got {len(values)} axes")
    return tuple(values) * 2 if len(values) == 1 else tuple(values)


def _window(layer: caffe_pb2.LayerParameter, kind: str, r: Reach) -> Reach:
    w = RULES[layer.type].window(layer)
    if w is None:
        raise FcnkitError(f"{where(layer)}: global pooling reads the whole image")
    if w.axis != 1:
        raise FcnkitError(f"{where(layer)}: tiling needs windows over H, W (axis 1)")
    s, p, k = (_hw(v, layer) for v in broadcast(w.stride, w.pad, w.extent))
    if kind == "down":  # cell i <- bottom s*i - p + [0, k - 1]
        return Reach(tuple(a * si for a, si in zip(r.scale, s)),
                     tuple(a * -pi + lo for a, pi, lo in zip(r.scale, p, r.lo)),
                     tuple(a * (ki - 1 - pi) + hi for a, pi, ki, hi in zip(r.scale, p, k, r.hi)),
                     _period(r.period, (a * si for a, si in zip(r.scale, s))))
    # up: cell j <- bottom i in [(j + p - k + 1) / s, (j + p) / s]
    return Reach(tuple(a / si for a, si in zip(r.scale, s)),
                 tuple(a * Fraction(pi - ki + 1, si) + lo
                       for a, pi, ki, si, lo in zip(r.scale, p, k, s, r.lo)),
                 tuple(a * Fraction(pi, si) + hi for a, pi, si, hi in zip(r.scale, p, s, r.hi)),
                 _period(r.period, (a / si for a, si in zip(r.scale, s))))


def _period(period: tuple[int, int], scale) -> tuple[int, int]:
    """A shift by t input pixels moves a blob of scale n/d by t*d/n cells: n must divide t."""
    return tuple(math.lcm(q, Fraction(a).numerator)  # type: ignore[return-value]
                 for q, a in zip(period, scale))


def _crop(layer: caffe_pb2.LayerParameter, r: Reach) -> Reach:
    p = layer.crop_param
    offsets = list(p.offset) or [0]
    if p.axis > 2 or (p.axis < 2 and any(offsets[:2 - p.axis])):
        raise FcnkitError(f"{where(layer)}: tiling needs crops of H and W only")
    hw = offsets[-2:] if len(offsets) > 1 else offsets * 2
    return Reach(r.scale, tuple(lo + a * o for lo, a, o in zip(r.lo, r.scale, hw)),
                 tuple(hi + a * o for hi, a, o in zip(r.hi, r.scale, hw)), r.period)


def _union(layer: caffe_pb2.LayerParameter, parts: list[Reach]) -> Reach:
    if len({x.scale for x in parts}) != 1:
        raise FcnkitError(f"{where(layer)}: joins blobs of different scales")
    return Reach(parts[0].scale, tuple(map(min, zip(*(x.lo for x in parts)))),
                 tuple(map(max, zip(*(x.hi for x in parts)))),
                 tuple(map(math.lcm, *(x.period for x in parts))))


def _through(layer: caffe_pb2.LayerParameter, parts: list[Reach]) -> Reach:
    if layer.type in NOT_LOCAL:
        raise FcnkitError(f"{where(layer)}: reads the whole image (not a local window)")
    if layer.type == "LRN" and layer.lrn_param.norm_region == layer.lrn_param.WITHIN_CHANNEL:
        n = layer.lrn_param.local_size  # a local_size square around each pixel
        r = parts[0]
        return Reach(r.scale, tuple(lo - a * (n // 2) for lo, a in zip(r.lo, r.scale)),
                     tuple(hi + a * (n // 2) for hi, a in zip(r.hi, r.scale)), r.period)
    kind = RULES[layer.type].kind
    if kind in ("down", "up"):
        return _window(layer, kind, parts[0])
    if kind == "crop":
        return _crop(layer, parts[0])
    return _union(layer, parts)


def reach(net: caffe_pb2.NetParameter, data: str | Sequence[str], blob: str) -> Reach:
    """The input interval of `blob`'s cells relative to the input blob(s) `data`, pixel-aligned
    images such as colour and depth (net as given: a deploy net, or a net filtered to one
    phase). Raises FcnkitError naming the first layer on the way without a local window rule
    (global pooling, MVN, layers fcnkit has no rule for)."""
    graph = BlobGraph(net)
    inputs = [data] if isinstance(data, str) else list(data)
    one, zero = Fraction(1), Fraction(0)
    found: dict = {graph.node(name): Reach((one, one), (zero, zero), (zero, zero), (1, 1))
                   for name in inputs}
    blocked: dict = {}
    for i, layer in enumerate(graph.layers):
        bottoms = walked_bottoms(layer.type, graph.bottoms[i])
        parts = [found[b] for b in bottoms if b in found]
        reason = next((blocked[b] for b in bottoms if b in blocked), None)
        if not parts and reason is None:
            continue
        nodes = [(i, t) for t in range(len(layer.top))]
        if reason is None and len(parts) != len(bottoms):
            reason = f"{where(layer)}: joins the input with a blob not made from it"
        if reason is None and layer.type not in RULES and layer.type not in PASS_THROUGH:
            reason = f"{where(layer)}: no coordinate rule for this layer type"
        if reason is None:
            try:
                r = _through(layer, parts)
            except FcnkitError as e:
                reason = str(e)
        for node in nodes:
            if reason is None:
                found[node] = r
            else:
                blocked[node] = reason
    target = graph.node(blob)
    if target in blocked:
        raise FcnkitError(f"cannot relate {blob!r} to {', '.join(inputs)} pixel by pixel: "
                          f"{blocked[target]}")
    if target not in found:
        raise FcnkitError(f"blob {blob!r} is not computed from input {', '.join(inputs)}")
    return found[target]
