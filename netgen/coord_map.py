"""Relate the pixel coordinates of two blobs, and crop one onto the other (Caffe's coord_map).

Every spatial layer maps bottom coordinates x to top coordinates y = scale * x + shift, on the
spatial axes after `axis` (the channel axis). Walking back from two blobs to a common ancestor and
composing the maps on the way gives the map between them; FCN uses it to compute the offsets of
its Crop layers instead of hand-tuning them. Exact fractions keep offsets such as 19 exact.

The per-layer rules live in one table (RULES) and read a LayerParameter, so the same rules serve
NetSpec tops (top_coord_map, coord_map_from_to, crop) and prototxt blobs by name
(coord_map_between). coord_map_from_to and crop answer as pycaffe's caffe.coord_map does
(numpy arrays; RuntimeError for unconnected tops, AssertionError for an impossible crop, as
FcnkitErrors), so BVLC's own test_coord_map.py passes with its imports changed.
"""
from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Callable, Hashable, Iterable, NamedTuple

import numpy as np

from .errors import FcnkitAssertionError, FcnkitError, FcnkitRuntimeError
from .geometry import Window, broadcast, conv_window, pool_window, where
from .netspec import LAYER_TYPES, Function, L, Top
from .proto import caffe_pb2


class CoordMap(NamedTuple):
    """y = scale * x + shift on each spatial axis after `axis` (None: any axis, a pointwise map).

    `scale` and `shift` hold one Fraction for every spatial axis, or one per axis.
    """

    axis: int | None
    scale: tuple[Fraction, ...]
    shift: tuple[Fraction, ...]


IDENTITY = CoordMap(None, (Fraction(1),), (Fraction(0),))

# Layers that keep every pixel where it is.
PASS_THROUGH = frozenset({
    "AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Exp", "Log", "LRN",
    "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH", "Threshold"})


def _vec(values: Iterable) -> tuple[Fraction, ...]:
    """Fractions, collapsed to one value when all axes agree (as pycaffe's scalar params)."""
    values = tuple(Fraction(v) for v in values)
    return values[:1] if len(set(values)) == 1 else values


def _axis(axis: int, layer: caffe_pb2.LayerParameter) -> int:
    if axis < 0:
        raise FcnkitError(f"{where(layer)}: coordinate maps need a non-negative axis, got {axis}")
    return axis


def _down(w: Window, layer: caffe_pb2.LayerParameter) -> CoordMap:
    """Convolution / Pooling: scale 1/s, shift (p - (k_eff-1)/2) / s."""
    s, p, k = broadcast(w.stride, w.pad, w.extent)
    return CoordMap(_axis(w.axis, layer), _vec(Fraction(1, si) for si in s),
                    _vec(Fraction(2 * pi - (ki - 1), 2 * si) for si, pi, ki in zip(s, p, k)))


def _up(w: Window, layer: caffe_pb2.LayerParameter) -> CoordMap:
    """Deconvolution: scale s, shift (k_eff-1)/2 - p."""
    s, p, k = broadcast(w.stride, w.pad, w.extent)
    return CoordMap(_axis(w.axis, layer), _vec(s),
                    _vec(Fraction(ki - 1, 2) - pi for pi, ki in zip(p, k)))


def _crop(layer: caffe_pb2.LayerParameter) -> CoordMap:
    """Crop: shift -offset on the axes from crop axis on; the map's axis is the one before."""
    p = layer.crop_param
    return CoordMap(_axis(p.axis, layer) - 1, (Fraction(1),),
                    _vec(-o for o in p.offset) if p.offset else (Fraction(0),))


class Rule(NamedTuple):
    """How a layer type moves pixels: kind "down" (strided window), "up" (deconvolution),
    "crop" or "identity"; `window` reads the kernel of the sliding kinds (None: no map)."""

    kind: str
    window: Callable[[caffe_pb2.LayerParameter], Window | None] | None = None


# The one table of per-layer rules; a type not listed stops every walk.
RULES: dict[str, Rule] = {
    "Convolution": Rule("down", conv_window),
    "Im2col": Rule("down", conv_window),
    "Pooling": Rule("down", pool_window),    # global pooling: no window, no map
    "Deconvolution": Rule("up", conv_window),
    "Crop": Rule("crop"),
    **{t: Rule("identity") for t in PASS_THROUGH},
}
_SLIDING = {"down": _down, "up": _up}


def layer_coord_map(layer: caffe_pb2.LayerParameter) -> CoordMap | None:
    """Map from a layer's bottom coordinates to its top coordinates; None if it has none."""
    rule = RULES.get(layer.type)
    if rule is None:
        return None
    if rule.kind == "identity":
        return IDENTITY
    if rule.kind == "crop":
        return _crop(layer)
    w = rule.window(layer)
    return None if w is None else _SLIDING[rule.kind](w, layer)


def walked_bottoms(layer_type: str, bottoms: tuple) -> tuple:
    """Bottoms a walk follows: all of them, except that Crop's reference (2nd) bottom is skipped."""
    return bottoms[:1] if layer_type == "Crop" else bottoms


def compose(base: CoordMap, nxt: CoordMap) -> CoordMap:
    """base after nxt: (a1, b1) o (a2, b2) = (a1*a2, a1*b2 + b1); axes must agree."""
    ax1, a1, b1 = base
    ax2, a2, b2 = nxt
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise FcnkitError(f"coordinate maps on different axes ({ax1} and {ax2}) cannot be composed")
    a1, b1, a2, b2 = broadcast(a1, b1, a2, b2)
    return CoordMap(ax2 if ax1 is None else ax1, _vec(x * y for x, y in zip(a1, a2)),
                    _vec(x * y + z for x, y, z in zip(a1, b2, b1)))


def inverse(m: CoordMap) -> CoordMap:
    """(a, b)^-1 = (1/a, -b/a): from top coordinates back to bottom coordinates."""
    a, b = broadcast(m.scale, m.shift)
    return CoordMap(m.axis, _vec(1 / x for x in a), _vec(-y / x for x, y in zip(a, b)))


def _same(m1: CoordMap, m2: CoordMap) -> bool:
    if m1.axis is not None and m2.axis is not None and m1.axis != m2.axis:
        return False
    a1, a2, b1, b2 = broadcast(m1.scale, m2.scale, m1.shift, m2.shift)
    return a1 == a2 and b1 == b2


# A blob graph: node -> (layer making it, its bottoms as nodes), or None for a source blob.
Producer = Callable[[Hashable], "tuple[caffe_pb2.LayerParameter, tuple] | None"]


def _step(node: Hashable, producer: Producer, stops: list[str]):
    """(map of the layer making `node`, bottoms to walk); stops records where walks end."""
    made = producer(node)
    if made is None:
        return None, ()
    layer, bottoms = made
    m = layer_coord_map(layer)
    if m is None:
        stops.append(where(layer))
        return None, ()
    return m, walked_bottoms(layer.type, bottoms)


def _visit(maps: dict, queue: deque, node: Hashable, m: CoordMap, bottoms: tuple, describe) -> None:
    """Record each bottom's map through `node`; a bottom reached twice must get the same map."""
    for bottom in bottoms:
        found = compose(maps[node], m)
        if bottom not in maps:
            maps[bottom] = found
            queue.append(bottom)
        elif not _same(maps[bottom], found):
            raise FcnkitRuntimeError(f"{describe(bottom)} is reached along paths with different "
                                     f"coordinate maps {_show(maps[bottom])} and {_show(found)}")


def _show(m: CoordMap) -> str:
    nums = lambda v: ",".join(str(x) for x in v)
    return f"(axis {m.axis}, scale {nums(m.scale)}, shift {nums(m.shift)})"


def walk_between(src: Hashable, dst: Hashable, producer: Producer, describe) -> CoordMap:
    """Map from src's coordinates to dst's, walking both back to the nearest common blob.

    All spatial ancestors of src are mapped first; then dst's ancestors, breadth first, until
    one of them is among src's. Branches that reach a blob with different maps are an error.
    """
    stops: list[str] = []
    from_maps, queue = {src: IDENTITY}, deque([src])
    while queue:
        node = queue.popleft()
        _visit(from_maps, queue, node, *_step(node, producer, stops), describe)
    to_maps, queue = {dst: IDENTITY}, deque([dst])
    while queue:
        node = queue.popleft()
        if node in from_maps:
            return compose(to_maps[node], inverse(from_maps[node]))
        _visit(to_maps, queue, node, *_step(node, producer, stops), describe)
    ended = f" (the walk stops at {', '.join(dict.fromkeys(stops))})" if stops else ""
    raise FcnkitRuntimeError(f"cannot relate {describe(src)} to {describe(dst)}: they have no "
                             f"common ancestor through spatial layers{ended}")


# ---- NetSpec tops

def function_layer(fn: Function) -> caffe_pb2.LayerParameter:
    """The LayerParameter a NetSpec Function stands for (options routed as NetSpec does)."""
    layer = caffe_pb2.LayerParameter(type=fn.type_name, name=fn.type_name)
    if fn.type_name in LAYER_TYPES:
        fn.fill(layer)
    return layer


def _top_graph() -> tuple[Producer, Callable[[Top], str]]:
    cache: dict[Function, caffe_pb2.LayerParameter] = {}

    def producer(top: Top):
        if top.fn not in cache:
            cache[top.fn] = function_layer(top.fn)
        return cache[top.fn], top.fn.inputs

    def describe(top: Top) -> str:
        return f"the {top.fn.type_name} output" + (f" #{top.n}" if top.fn.ntop > 1 else "")

    return producer, describe


def top_coord_map(top_from: Top, top_to: Top) -> CoordMap:
    """Map from top_from's coordinates to top_to's (NetSpec tops), in exact fractions.

    Raises FcnkitRuntimeError (a RuntimeError) when no spatial path joins them.
    """
    producer, describe = _top_graph()
    return walk_between(top_from, top_to, producer, describe)


def coord_map_from_to(top_from: Top, top_to: Top
                      ) -> tuple[int | None, np.ndarray | float, np.ndarray | float]:
    """(axis, scale, shift) from top_from's coordinates to top_to's, as pycaffe returns it.

    axis: the last non-spatial axis (1 for N, C, H, W). scale, shift: y = scale * x + shift,
    float64 arrays with one entry per spatial axis when the axes differ and one shared entry
    when they agree (pycaffe's length with scalar kernel sizes; pycaffe keeps n equal entries
    for a list of n equal sizes); compare and compute with them as with pycaffe's (`a == 1`,
    `b - pad`). A path of pointwise layers only gives (None, 1.0, 0.0), plain floats, as pycaffe.
    Raises FcnkitRuntimeError (a RuntimeError, as pycaffe) when no spatial path joins the tops,
    FcnkitValueError (numpy's ValueError in pycaffe) for per-axis values of different counts.
    """
    m = top_coord_map(top_from, top_to)
    if m.axis is None:
        return None, float(m.scale[0]), float(m.shift[0])
    scale, shift = broadcast(m.scale, m.shift)
    return m.axis, np.array(scale, dtype=np.float64), np.array(shift, dtype=np.float64)


def crop_offsets(m: CoordMap, what: str) -> tuple[int, list[int]]:
    """(Crop axis, offsets) that cut the `from` blob down to the `to` blob given the map between.

    Raises FcnkitAssertionError (an AssertionError, as pycaffe's crop) for a scale other than 1,
    a negative or a fractional offset.
    """
    scales, offsets = ", ".join(map(str, m.scale)), ", ".join(str(-b) for b in m.shift)
    if any(a != 1 for a in m.scale):
        raise FcnkitAssertionError(f"cannot crop {what}: scale mismatch (scale {scales}, must be 1)")
    if any(b > 0 for b in m.shift):
        raise FcnkitAssertionError(f"cannot crop {what}: negative offset {offsets} "
                                   "(the first blob starts inside the second)")
    if any(b.denominator != 1 for b in m.shift):
        raise FcnkitAssertionError(f"cannot crop {what}: non-integer offset {offsets}")
    axis = 1 if m.axis is None else m.axis
    return axis + 1, [int(-b) for b in m.shift]


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer cutting top_from to top_to's size, aligned by the coordinate map."""
    producer, describe = _top_graph()
    m = walk_between(top_from, top_to, producer, describe)
    axis, offset = crop_offsets(m, f"{describe(top_from)} to {describe(top_to)}")
    return L.Crop(top_from, top_to, crop_param=dict(axis=axis, offset=offset))


# ---- prototxt blobs by name

class BlobGraph:
    """A NetParameter's blobs as a graph; every layer output is its own node (SSA).

    Nodes are (layer index, top index), or (-1, i) for the net's legacy `input` blobs, so an
    in-place layer (ReLU on conv1) gets a node of its own and the history stays intact.
    """

    def __init__(self, net: caffe_pb2.NetParameter):
        if len(net.layers) and not len(net.layer):
            raise FcnkitError("net uses the legacy V1 `layers` list; upgrade it to `layer` first")
        self.layers = list(net.layer)
        self.latest: dict[str, tuple[int, int]] = {name: (-1, i) for i, name in enumerate(net.input)}
        self.names: dict[tuple[int, int], str] = {v: k for k, v in self.latest.items()}
        self.bottoms: list[tuple] = []
        for i, layer in enumerate(self.layers):
            missing = [b for b in layer.bottom if b not in self.latest]
            if missing:
                raise FcnkitError(f"{where(layer)}: bottom {missing[0]!r} is not made by an earlier layer")
            self.bottoms.append(tuple(self.latest[b] for b in layer.bottom))
            for j, top in enumerate(layer.top):
                self.latest[top] = (i, j)
                self.names[(i, j)] = top

    def node(self, blob: str) -> tuple[int, int]:
        """The last version of the named blob (after any in-place layers)."""
        try:
            return self.latest[blob]
        except KeyError:
            raise FcnkitError(f"the net has no blob named {blob!r}") from None

    def producer(self, node: tuple[int, int]):
        i = node[0]
        return None if i < 0 else (self.layers[i], self.bottoms[i])

    def describe(self, node: tuple[int, int]) -> str:
        i = node[0]
        return f"blob {self.names[node]!r}" + ("" if i < 0 else f" (output of {where(self.layers[i])})")

    def between(self, src: tuple[int, int], dst: tuple[int, int]) -> CoordMap:
        """Map from node src's coordinates to node dst's."""
        return walk_between(src, dst, self.producer, self.describe)


def coord_map_between(net: caffe_pb2.NetParameter, from_blob: str, to_blob: str) -> CoordMap:
    """Map from from_blob's coordinates to to_blob's in a prototxt net (blobs by name).

    Uses the net as given: filter a multi-phase net first (netgen.shapes.filter_phase).
    """
    g = BlobGraph(net)
    return g.between(g.node(from_blob), g.node(to_blob))
