"""The layer-by-layer table the FCN papers and articles build by hand, for any prototxt net.

For one input size it lists each layer's window (kernel, stride, pad, dilation), its output
shape, the coordinate map from the input blob to its output (top = scale * input + shift), the
offsets of crops, and the receptive field (size and jump, in input pixels) — the numbers needed
to see why FCN-32s crops its upsampled score by 19 pixels, or why an input is too small.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

from .coord_map import RULES, BlobGraph, CoordMap, walked_bottoms
from .errors import FcnkitError
from .geometry import Window, broadcast
from .proto import caffe_pb2
from .shapes import (SOURCES, LayerShapes, data_sizes, filter_phase, layer_shapes,
                     net_inputs)

Node = tuple[int, int]
RF = tuple[tuple[Fraction, ...], tuple[Fraction, ...]]   # (size, jump) per spatial axis

HEADER = ("layer", "type", "kernel", "stride", "pad", "dil", "output", "scale", "shift",
          "offset", "rf", "jump")
LEGEND = ("scale, shift: output coords = scale * {data} coords + shift\n"
          "rf: receptive field in {data} pixels; jump: {data} pixels between neighbouring outputs\n"
          "-: not spatially related to {data}")


def _num(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _vec(values: Sequence) -> str:
    """One value when all axes agree, else h x w ..."""
    values = [Fraction(v) for v in values]
    return _num(values[0]) if len(set(values)) == 1 else "x".join(_num(v) for v in values)


def _shape(shape) -> str:
    if shape is None:
        return "?"
    return "x".join(map(str, shape)) if shape else "scalar"


def _input_blob(net: caffe_pb2.NetParameter) -> str:
    """The net's first input: a legacy `input`, else the first top of the first source layer."""
    if len(net.input):
        return net.input[0]
    for layer in net.layer:
        if not len(layer.bottom) and len(layer.top):
            return layer.top[0]
    raise FcnkitError("the net has no input blob (no `input` and no layer without bottoms)")


def _declared(net: caffe_pb2.NetParameter) -> dict[str, tuple | None]:
    """Shapes the net gives its inputs (input lists, Input/DummyData/MemoryData layers); None
    where only the data comes to say (data and Python layers)."""
    declared: dict[str, tuple | None] = dict(net_inputs(net))
    for layer in net.layer:
        if not len(layer.bottom) and layer.type in SOURCES:
            declared.update(zip(layer.top, SOURCES[layer.type](layer, len(layer.top))))
    return declared


def _sizes(net: caffe_pb2.NetParameter, data: str, size: tuple[int, int]) -> dict[str, tuple]:
    """Input shapes for an H x W image: declared N,C,H,W shapes get H x W, other declared shapes
    stay; data layers' tops get netgen.shapes.data_sizes (crop_size, per-image labels) and
    other undeclared ones 1x3xHxW for the input blob, 1x1xHxW (labels) for the rest."""
    h, w = size
    declared = _declared(net)
    from_data = data_sizes(net, size)
    if data not in declared and data not in from_data:
        raise FcnkitError(f"cannot size input blob {data!r}: it is not an input or source layer top")
    sized = {name: (1, 3 if name == data else 1, h, w) if shape is None else
             (*shape[:2], h, w) if len(shape) == 4 else shape
             for name, shape in declared.items()}
    return {**sized, **from_data}


def _window_columns(layer: caffe_pb2.LayerParameter) -> tuple[str, str, str, str]:
    rule = RULES.get(layer.type)
    if rule is None or rule.window is None:
        return "", "", "", ""
    w = rule.window(layer)
    if w is None:
        return "global", "", "", ""
    return _vec(w.kernel), _vec(w.stride), _vec(w.pad), _vec(w.dilation)


def _rf_through(layer: caffe_pb2.LayerParameter, rf_in: RF) -> RF:
    """Receptive field after a sliding layer: a window of k_eff inputs spaced `jump` apart."""
    rule = RULES[layer.type]
    w: Window = rule.window(layer)
    size, jump, k, s = broadcast(*rf_in, w.extent, w.stride)
    if rule.kind == "down":
        return (tuple(r + (ki - 1) * j for r, j, ki in zip(size, jump, k)),
                tuple(j * si for j, si in zip(jump, s)))
    # up: an output mixes at most ceil(k_eff / s) neighbouring inputs
    return (tuple(r + (math.ceil(Fraction(ki, si)) - 1) * j for r, j, ki, si in zip(size, jump, k, s)),
            tuple(j / si for j, si in zip(jump, s)))


def _union(parts: list[tuple[RF, CoordMap]]) -> RF:
    """Receptive field of a pointwise layer joining branches: the union of their fields, each
    placed by its branch's coordinate map (where pixel 0 of the output sits in the input)."""
    if len(parts) == 1:
        return parts[0][0]
    lo, hi, jumps = [], [], []
    for (size, jump), m in parts:
        size, jump, a, b = broadcast(size, jump, m.scale, m.shift)
        centre = [-bi / ai for ai, bi in zip(a, b)]
        lo.append([c - (r - 1) / 2 for c, r in zip(centre, size)])
        hi.append([c + (r - 1) / 2 for c, r in zip(centre, size)])
        jumps.append(jump)
    low = [min(v) for v in zip(*broadcast(*map(tuple, lo)))]
    high = [max(v) for v in zip(*broadcast(*map(tuple, hi)))]
    return (tuple(h - l + 1 for l, h in zip(low, high)),
            tuple(min(v) for v in zip(*broadcast(*jumps))))


class _Walker:
    """Coordinate maps and receptive fields of blobs relative to the input blob."""

    def __init__(self, net: caffe_pb2.NetParameter, data: str):
        self.graph = BlobGraph(net)
        # the input as made (an in-place layer on it, e.g. Convolution data -> data, is a later
        # version of the blob that the maps start before)
        self.data = min((n for n, name in self.graph.names.items() if name == data),
                        default=None) or self.graph.node(data)
        self.maps: dict[Node, CoordMap | None] = {}
        self.rfs: dict[Node, RF] = {self.data: ((Fraction(1),), (Fraction(1),))}

    def coord_map(self, node: Node) -> CoordMap | None:
        if node not in self.maps:
            try:
                self.maps[node] = self.graph.between(self.data, node)
            except FcnkitError:
                self.maps[node] = None
        return self.maps[node]

    def receptive_field(self, i: int, t: int) -> RF | None:
        node = (i, t)
        if node in self.rfs or self.coord_map(node) is None:
            return self.rfs.get(node)
        layer, bottoms = self.graph.producer(node)
        kind = RULES[layer.type].kind
        walked = walked_bottoms(layer.type, bottoms)
        if kind in ("down", "up"):
            source = walked[t] if len(walked) == len(layer.top) else walked[0]
            rf = self.rfs.get(source)
            found = None if rf is None else _rf_through(layer, rf)
        else:
            parts = [(self.rfs[b], self.maps[b]) for b in walked
                     if b in self.rfs and self.maps.get(b) is not None]
            found = _union(parts) if parts else None
        if found is not None:
            self.rfs[node] = found
        return found


def explain(net: caffe_pb2.NetParameter, size: tuple[int, int], data: str | None = None,
            phase: str | int | None = "TEST") -> str:
    """The explain table for an H x W input, one row per layer, as aligned text.

    data: the input blob (default: the net's first input); phase: filter the net to this
    phase first (None: use it as given).
    """
    if phase is not None:
        net = filter_phase(net, phase)
    data = data or _input_blob(net)
    shapes: list[LayerShapes] = layer_shapes(net, _sizes(net, data, size))
    walker = _Walker(net, data)
    rows = [HEADER]
    for i, ls in enumerate(shapes):
        layer = ls.layer
        fields = [walker.receptive_field(i, t) for t in range(len(layer.top))]
        m = walker.coord_map((i, 0)) if fields else None
        rf = fields[0] if fields else None
        offset = ""
        if layer.type == "Crop":
            offset = ",".join(map(str, layer.crop_param.offset)) or "0"
        rows.append((layer.name, layer.type, *_window_columns(layer),
                     ", ".join(_shape(s) for s in ls.tops) or "-",
                     _vec(m.scale) if m else "-", _vec(m.shift) if m else "-", offset,
                     _vec(rf[0]) if rf else "-", _vec(rf[1]) if rf else "-"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + ["", LEGEND.format(data=data)]) + "\n"
