"""Blob and parameter shapes of a Caffe net for given input sizes, by Caffe's own Reshape rules.

Knowing every shape before running anything lets us check a generated FCN (crops in bounds,
eltwise operands aligned), size the weights that surgery transplants, and print the explain
table. Rules follow Caffe's layer Reshape/LayerSetUp code, integer arithmetic included: the
convolution quotient truncates toward zero as C++ does, pooling rounds up (or down with
round_mode FLOOR) and then drops a last window that would start in the padding.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

from .errors import FcnkitError
from .geometry import Window, conv_window, pool_window, where
from .netstate import filter_net, make_state
from .proto import caffe_pb2

Shape = tuple[int, ...]
Sizes = Mapping[str, Sequence[int]]
Layer = caffe_pb2.LayerParameter
MAX_BLOB_AXES, INT_MAX = 32, 2**31 - 1  # Caffe's kMaxBlobAxes and Blob::Reshape's count limit


# ---- phase filtering (Caffe's Net::FilterNet)

def filter_phase(net: caffe_pb2.NetParameter, phase: str | int, stages: Iterable[str] = (),
                 level: int = 0) -> caffe_pb2.NetParameter:
    """A copy of `net` keeping the layers Caffe keeps in this state (netgen.netstate)."""
    return filter_net(net, make_state(phase, level, tuple(stages)))


# ---- helpers shared by the rules

def _axis(axis: int, ndim: int, layer: Layer, what: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: -ndim <= axis < ndim, negatives count from the end."""
    if not -ndim <= axis < ndim:
        raise FcnkitError(f"{where(layer)}: {what} {axis} out of range for a {ndim}-axis blob")
    return axis % ndim


def _count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _bottoms(layer: Layer, bottoms: list[Shape], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(bottoms) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise FcnkitError(f"{where(layer)}: takes {want} bottoms, has {len(bottoms)}")


def _positive(layer: Layer, shape: Sequence[int], what: str) -> Shape:
    if any(d <= 0 for d in shape):
        raise FcnkitError(f"{where(layer)}: {what} {list(shape)} is empty; the input is too small")
    return tuple(shape)


def _spatial(layer: Layer, bottom: Shape) -> tuple[Window, int]:
    """The convolution window expanded to the bottom's spatial axes, and the channel axis."""
    w = conv_window(layer)
    axis = _axis(w.axis, len(bottom), layer)
    n = len(bottom) - axis - 1
    if n < 1:
        raise FcnkitError(f"{where(layer)}: no spatial axes after axis {axis} in {list(bottom)}")
    return w.per_axis(n, layer), axis


def _trunc_div(a: int, b: int) -> int:
    """C++ integer division (toward zero)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def _conv_out(i: int, k: int, s: int, p: int) -> int:
    return _trunc_div(i + 2 * p - k, s) + 1


def _deconv_out(i: int, k: int, s: int, p: int) -> int:
    return s * (i - 1) + k - 2 * p


def _conv_like(out_size: Callable[[int, int, int, int], int]):
    def rule(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
        _bottoms(layer, bottoms, 1, max(1, len(bottoms)))
        if any(b != bottoms[0] for b in bottoms):
            raise FcnkitError(f"{where(layer)}: all bottoms must have the same shape, got {bottoms}")
        if ntop != len(bottoms):
            raise FcnkitError(f"{where(layer)}: needs one top per bottom ({len(bottoms)}), has {ntop}")
        b = bottoms[0]
        w, axis = _spatial(layer, b)
        p = layer.convolution_param
        if p.num_output <= 0:
            raise FcnkitError(f"{where(layer)}: num_output must be positive")
        if p.group <= 0:  # divides channels and num_output below (Caffe: CHECK_EQ % group)
            raise FcnkitError(f"{where(layer)}: group must be positive, got {p.group}")
        if b[axis] % p.group or p.num_output % p.group:
            raise FcnkitError(f"{where(layer)}: channels {b[axis]} and num_output {p.num_output} "
                              f"must both be divisible by group {p.group}")
        spatial = [out_size(i, k, s, q) for i, k, s, q in
                   zip(b[axis + 1:], w.extent, w.stride, w.pad)]
        top = _positive(layer, (*b[:axis], p.num_output, *spatial), "output")
        return [top] * len(bottoms)
    return rule


def _im2col(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    w, axis = _spatial(layer, b)
    spatial = [_conv_out(i, k, s, q) for i, k, s, q in zip(b[axis + 1:], w.extent, w.stride, w.pad)]
    return [_positive(layer, (*b[:axis], b[axis] * _count(w.kernel), *spatial), "output")]


def _pooling(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    if len(b) != 4:
        raise FcnkitError(f"{where(layer)}: Pooling needs a 4-axis (N,C,H,W) bottom, got {list(b)}")
    w = pool_window(layer)
    if w is None:
        return [(b[0], b[1], 1, 1)] * ntop
    w = w.per_axis(2, layer)
    floor = layer.pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    out = []
    for i, k, s, p in zip(b[2:], w.kernel, w.stride, w.pad):
        span = i + 2 * p - k
        o = (span // s if floor else -(-span // s)) + 1
        if p and (o - 1) * s >= i + p:      # the last window would start in the padding
            o -= 1
        out.append(o)
    return [_positive(layer, (b[0], b[1], *out), "output")] * ntop


def _crop(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 2)
    src, ref = bottoms
    if len(src) != len(ref):
        raise FcnkitError(f"{where(layer)}: bottoms {list(src)} and {list(ref)} differ in axis count")
    p = layer.crop_param
    start = _axis(p.axis, len(src), layer)
    n = len(src) - start
    offsets = list(p.offset)
    if len(offsets) not in (0, 1, n):
        raise FcnkitError(f"{where(layer)}: crop offset has {len(offsets)} values; give 0, 1 or {n}")
    offsets = offsets * n if len(offsets) == 1 else offsets or [0] * n
    top = list(src)
    for ax, off in zip(range(start, len(src)), offsets):
        if src[ax] - off < ref[ax]:
            raise FcnkitError(f"{where(layer)}: crop is out of bounds: axis {ax} of {list(src)} "
                              f"from offset {off} cannot hold {ref[ax]}")
        top[ax] = ref[ax]
    return [tuple(top)]


def _eltwise(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 2, max(2, len(bottoms)))
    p = layer.eltwise_param
    if len(p.coeff) not in (0, len(bottoms)):
        raise FcnkitError(f"{where(layer)}: {len(p.coeff)} coeff values for {len(bottoms)} bottoms")
    if len(p.coeff) and p.operation != caffe_pb2.EltwiseParameter.SUM:
        raise FcnkitError(f"{where(layer)}: coeff is only for operation SUM")
    if any(b != bottoms[0] for b in bottoms):
        raise FcnkitError(f"{where(layer)}: bottoms must have the same shape, got "
                          f"{', '.join(str(list(b)) for b in bottoms)}")
    return [bottoms[0]]


def _concat(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1, max(1, len(bottoms)))
    p = layer.concat_param
    if p.HasField("concat_dim") and p.HasField("axis"):
        raise FcnkitError(f"{where(layer)}: give axis OR concat_dim, not both")
    first = bottoms[0]
    axis = _axis(p.concat_dim if p.HasField("concat_dim") else p.axis, len(first), layer)
    for b in bottoms[1:]:
        if len(b) != len(first) or any(x != y for i, (x, y) in enumerate(zip(b, first)) if i != axis):
            raise FcnkitError(f"{where(layer)}: bottoms {list(first)} and {list(b)} differ "
                              f"outside concat axis {axis}")
    return [(*first[:axis], sum(b[axis] for b in bottoms), *first[axis + 1:])]


def _inner_product(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    axis = _axis(layer.inner_product_param.axis, len(b), layer)
    return [(*b[:axis], layer.inner_product_param.num_output)]


def _same_as_first(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    return [bottoms[0]] * ntop


def _scale_or_bias(field: str):
    def rule(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
        _bottoms(layer, bottoms, 1, 2)
        if len(bottoms) == 2:
            axis, span = _operand_span(layer, field, bottoms[0], len(bottoms[1]))
            if bottoms[0][axis:axis + span] != bottoms[1]:
                raise FcnkitError(f"{where(layer)}: second bottom {list(bottoms[1])} must equal axes "
                                  f"{axis}..{axis + span - 1} of {list(bottoms[0])}")
        return [bottoms[0]]
    return rule


def _operand_span(layer: Layer, field: str, b: Shape, span: int | None = None) -> tuple[int, int]:
    """First axis and number of axes a Scale/Bias operand covers (Caffe's axis/num_axes rules).

    `span` is the operand's axis count when it is a second bottom; a scalar operand sits at 0.
    """
    p = getattr(layer, field)
    if span is None:
        if p.num_axes < -1:
            raise FcnkitError(f"{where(layer)}: num_axes must be -1 or more")
        axis = _axis(p.axis, len(b), layer)
        span = len(b) - axis if p.num_axes == -1 else p.num_axes
    else:
        axis = 0 if span == 0 else _axis(p.axis, len(b), layer)
    if axis + span > len(b):
        raise FcnkitError(f"{where(layer)}: axis {axis} + {span} axes exceed {list(b)}")
    return axis, span


def _loss(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    """Losses give a scalar; SoftmaxWithLoss may also give its probabilities."""
    _bottoms(layer, bottoms, 2, 3)
    pred, label = bottoms[:2]
    if layer.type == "SoftmaxWithLoss":
        axis = _axis(layer.softmax_param.axis, len(pred), layer)
        want = _count(pred[:axis]) * _count(pred[axis + 1:])
        if _count(label) != want:
            raise FcnkitError(f"{where(layer)}: label {list(label)} has {_count(label)} values; "
                              f"prediction {list(pred)} needs {want} (one per position)")
    elif layer.type in ("EuclideanLoss", "SigmoidCrossEntropyLoss") and _count(pred) != _count(label):
        raise FcnkitError(f"{where(layer)}: bottoms {list(pred)} and {list(label)} differ in size")
    return [()] + [pred] * (ntop - 1)


def _accuracy(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 2)
    pred, label = bottoms
    p = layer.accuracy_param
    axis = _axis(p.axis, len(pred), layer)
    if _count(label) != _count(pred[:axis]) * _count(pred[axis + 1:]):
        raise FcnkitError(f"{where(layer)}: label {list(label)} does not match prediction {list(pred)}")
    if p.top_k > _count(pred) // max(1, _count(label)):
        raise FcnkitError(f"{where(layer)}: top_k {p.top_k} exceeds the number of classes")
    return [(), (pred[axis],)][:ntop]


def _flatten(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    start = _axis(layer.flatten_param.axis, len(b), layer)
    end = _axis(layer.flatten_param.end_axis, len(b), layer, "end_axis")
    return [(*b[:start], _count(b[start:end + 1]), *b[end + 1:])]


def _reshape(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    p = layer.reshape_param
    start = p.axis if p.axis >= 0 else len(b) + p.axis + 1
    if not 0 <= start <= len(b):
        raise FcnkitError(f"{where(layer)}: axis {p.axis} out of range for {list(b)}")
    if p.num_axes < -1:
        raise FcnkitError(f"{where(layer)}: num_axes must be -1 or more")
    end = len(b) if p.num_axes == -1 else start + p.num_axes
    if end > len(b):
        raise FcnkitError(f"{where(layer)}: axis + num_axes exceed {list(b)}")
    dims = list(p.shape.dim)
    if sum(d == -1 for d in dims) > 1 or any(d < -1 for d in dims):
        raise FcnkitError(f"{where(layer)}: shape may hold one -1 and no other negative value")
    if any(d == 0 and start + i >= len(b) for i, d in enumerate(dims)):
        raise FcnkitError(f"{where(layer)}: shape copies (0) an axis the bottom lacks")
    new = [b[start + i] if d == 0 else d for i, d in enumerate(dims)]
    top = [*b[:start], *new, *b[end:]]
    known = _count(d for d in top if d != -1)
    if -1 in top:
        if known == 0 or _count(b) % known:
            raise FcnkitError(f"{where(layer)}: cannot infer -1: {_count(b)} values into {dims}")
        top[top.index(-1)] = _count(b) // known
    if _count(top) != _count(b):
        raise FcnkitError(f"{where(layer)}: {list(b)} cannot be reshaped to {top}")
    return [tuple(top)]


def _slice(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    p = layer.slice_param
    axis = _axis(p.slice_dim if p.HasField("slice_dim") else p.axis, len(b), layer)
    points = list(p.slice_point)
    if points:
        if len(points) != ntop - 1 or points != sorted(set(points)) or points[-1] >= b[axis] \
                or points[0] <= 0:
            raise FcnkitError(f"{where(layer)}: slice_point {points} does not cut {b[axis]} into {ntop}")
        sizes = [y - x for x, y in zip([0, *points], [*points, b[axis]])]
    else:
        if b[axis] % ntop:
            raise FcnkitError(f"{where(layer)}: axis size {b[axis]} does not split into {ntop} tops")
        sizes = [b[axis] // ntop] * ntop
    return [(*b[:axis], s, *b[axis + 1:]) for s in sizes]


def _tile(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    axis = _axis(layer.tile_param.axis, len(b), layer)
    if layer.tile_param.tiles <= 0:
        raise FcnkitError(f"{where(layer)}: tiles must be positive")
    return [(*b[:axis], b[axis] * layer.tile_param.tiles, *b[axis + 1:])]


def _reduction(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    return [b[:_axis(layer.reduction_param.axis, len(b), layer)]]


def _argmax(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    b = bottoms[0]
    p = layer.argmax_param
    if p.HasField("axis"):
        axis = _axis(p.axis, len(b), layer)
        if p.top_k > b[axis]:
            raise FcnkitError(f"{where(layer)}: top_k {p.top_k} exceeds axis size {b[axis]}")
        return [(*b[:axis], p.top_k, *b[axis + 1:])]
    if p.top_k > _count(b[1:]):
        raise FcnkitError(f"{where(layer)}: top_k {p.top_k} exceeds {_count(b[1:])} values")
    top = [1] * max(3, len(b))
    top[0], top[1], top[2] = b[0], 2 if p.out_max_val else 1, p.top_k
    return [tuple(top)]


def _embed(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    _bottoms(layer, bottoms, 1)
    return [(*bottoms[0], layer.embed_param.num_output)]


def _no_tops(layer: Layer, bottoms: list[Shape], ntop: int) -> list[Shape]:
    return []


_IDENTITY_TYPES = ("AbsVal", "BatchNorm", "BNLL", "Clip", "Dropout", "ELU", "Exp", "Log", "LRN",
                   "MVN", "Power", "PReLU", "ReLU", "Sigmoid", "Softmax", "Split", "Swish", "TanH",
                   "Threshold")
_LOSS_TYPES = ("ContrastiveLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
               "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "SoftmaxWithLoss")

# Layer type -> (layer, bottom shapes, number of tops) -> top shapes.
RULES: dict[str, Callable[[Layer, list[Shape], int], list[Shape]]] = {
    "Convolution": _conv_like(_conv_out),
    "Deconvolution": _conv_like(_deconv_out),
    "Im2col": _im2col,
    "Pooling": _pooling,
    "Crop": _crop,
    "Eltwise": _eltwise,
    "Concat": _concat,
    "InnerProduct": _inner_product,
    "Scale": _scale_or_bias("scale_param"),
    "Bias": _scale_or_bias("bias_param"),
    "Accuracy": _accuracy,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Slice": _slice,
    "Tile": _tile,
    "Reduction": _reduction,
    "ArgMax": _argmax,
    "Embed": _embed,
    "Silence": _no_tops,
    "HDF5Output": _no_tops,
    **{t: _same_as_first for t in _IDENTITY_TYPES},
    **{t: _loss for t in _LOSS_TYPES},
}


# ---- source layers: shapes come from the net itself or from `sizes`

def _blob_shape(shape: caffe_pb2.BlobShape) -> Shape:
    return tuple(int(d) for d in shape.dim)


def _listed(shapes: Sequence[Shape], ntop: int, layer: Layer, what: str) -> list[Shape | None]:
    if len(shapes) == 1:
        return list(shapes) * ntop
    if len(shapes) in (0, ntop):
        return list(shapes) or [None] * ntop
    raise FcnkitError(f"{where(layer)}: {len(shapes)} {what} for {ntop} tops")


def _source_input(layer: Layer, ntop: int) -> list[Shape | None]:
    return _listed([_blob_shape(s) for s in layer.input_param.shape], ntop, layer, "shapes")


def _source_dummy(layer: Layer, ntop: int) -> list[Shape | None]:
    p = layer.dummy_data_param
    if len(p.shape):
        return _listed([_blob_shape(s) for s in p.shape], ntop, layer, "shapes")
    dims = [_listed([(v,) for v in getattr(p, f)], ntop, layer, f)
            for f in ("num", "channels", "height", "width")]
    return [None if None in d else tuple(x[0] for x in d) for d in zip(*dims)]


def _source_memory(layer: Layer, ntop: int) -> list[Shape | None]:
    p = layer.memory_data_param
    return [(p.batch_size, p.channels, p.height, p.width), (p.batch_size, 1, 1, 1)][:ntop]


SOURCES: dict[str, Callable[[Layer, int], list[Shape | None]]] = {
    "Input": _source_input,
    "DummyData": _source_dummy,
    "MemoryData": _source_memory,
    "Parameter": lambda layer, ntop: [_blob_shape(layer.parameter_param.shape)] * ntop,
}
# Layers whose top shapes only the user knows (a data set, or Python code): pass them in `sizes`.
USER_SIZED = frozenset({"Python", "Data", "ImageData", "HDF5Data", "WindowData"})
# Data layers whose second top is Caffe's classification label: one number per image.
PER_IMAGE_LABELS = frozenset({"Data", "ImageData", "WindowData"})


def data_sizes(net: caffe_pb2.NetParameter, size: tuple[int, int],
               channels: int | Mapping[str, int] = 3) -> dict[str, Shape]:
    """Assumed shapes (batch 1) of the tops of USER_SIZED layers, which only the data knows.

    The first top of each is an image of `channels` channels (or channels[top]), H x W = the
    layer's transform crop_size if set, else `size`; later tops are per-pixel labels (1
    channel), except the per-image label (1,) of Data/ImageData/WindowData as in Caffe.
    """
    sizes: dict[str, Shape] = {}
    for layer in net.layer:
        if layer.type not in USER_SIZED or len(layer.bottom):
            continue
        crop = layer.transform_param.crop_size
        spatial = (crop, crop) if crop else tuple(size)
        for i, top in enumerate(layer.top):
            if isinstance(channels, Mapping) and top in channels:
                sizes[top] = (1, channels[top], *spatial)
            elif i == 0:
                sizes[top] = (1, channels if isinstance(channels, int) else 3, *spatial)
            elif layer.type in PER_IMAGE_LABELS:
                sizes[top] = (1,)
            else:
                sizes[top] = (1, 1, *spatial)
    return sizes


class LayerShapes(NamedTuple):
    """One layer with the shapes of its bottoms and tops (None: unknown, not given in sizes)."""

    layer: Layer
    bottoms: list[Shape]
    tops: list[Shape | None]


def _run(net: caffe_pb2.NetParameter, sizes: Sizes | None,
         phase: str | int | None) -> tuple[list[LayerShapes], "OrderedDict[str, Shape | None]"]:
    """Walk the net in order: each layer's shapes, and every blob's final shape."""
    if phase is not None:
        net = filter_phase(net, phase)
    if len(net.layers) and not len(net.layer):
        raise FcnkitError("net uses the legacy V1 `layers` list; upgrade it to `layer` first")
    given = {k: tuple(int(d) for d in v) for k, v in (sizes or {}).items()}
    blobs: OrderedDict[str, Shape | None] = OrderedDict()
    makers: dict[str, str] = {}
    phased: dict[str, bool] = {}  # made by a layer with include/exclude rules
    for name, shape in net_inputs(net):
        blobs[name], makers[name] = given.get(name, shape), "the net's input list"
    used = set(blobs)
    out = []
    for layer in net.layer:
        bottoms = []
        for b in layer.bottom:
            if b not in blobs:
                raise FcnkitError(f"{where(layer)}: bottom {b!r} is not made by an earlier layer")
            if blobs[b] is None:
                raise FcnkitError(f"{where(layer)}: the shape of bottom {b!r} (from {makers[b]}) is "
                                  f"unknown; give it, e.g. sizes={{{b!r}: (N, C, H, W)}}")
            bottoms.append(blobs[b])
        for i, t in enumerate(layer.top):  # Caffe's Net::AppendTop: in place, or a new name
            in_place = i < len(layer.bottom) and layer.bottom[i] == t
            # (an unfiltered net may make a blob once per phase: then both carry rules)
            if t in blobs and not in_place and not (_phased(layer) and phased.get(t)):
                raise FcnkitError(f"{where(layer)}: top blob {t!r} produced by multiple sources "
                                  f"(also by {makers[t]})")
        tops = _layer_tops(layer, bottoms, given, used)
        for t, shape in zip(layer.top, tops):
            blobs[t], makers[t], phased[t] = shape, where(layer), _phased(layer)
        out.append(LayerShapes(layer, bottoms, tops))
    unused = sorted(set(given) - used)
    if unused:
        raise FcnkitError(f"sizes names {unused[0]!r}, which is not an input, data or Python layer "
                          "top of the net")
    return out, blobs


def _phased(layer: Layer) -> bool:
    return bool(len(layer.include) or len(layer.exclude))


def layer_shapes(net: caffe_pb2.NetParameter, sizes: Sizes | None = None,
                 phase: str | int | None = None) -> list[LayerShapes]:
    """Every layer in order with its bottom and top shapes.

    sizes: blob -> shape for net inputs, Input/DummyData tops (overriding the net's shapes) and
    the tops of data and Python layers, whose shapes only the caller knows. `phase`, when
    given, filters the net first (filter_phase).
    """
    return _run(net, sizes, phase)[0]


def blob_shapes(net: caffe_pb2.NetParameter, sizes: Sizes | None = None,
                phase: str | int | None = None) -> "OrderedDict[str, Shape | None]":
    """Blob name -> shape once the whole net has run (None: unknown and never consumed)."""
    return _run(net, sizes, phase)[1]


def net_inputs(net: caffe_pb2.NetParameter) -> list[tuple[str, Shape | None]]:
    """Legacy net-level inputs with their input_shape / input_dim shapes."""
    names = list(net.input)
    if len(net.input_shape):
        shapes = [_blob_shape(s) for s in net.input_shape]
    elif len(net.input_dim):
        dims = list(net.input_dim)
        shapes = [tuple(dims[i:i + 4]) for i in range(0, len(dims), 4)]
    else:
        shapes = [None] * len(names)
    if len(shapes) != len(names):
        raise FcnkitError(f"net lists {len(names)} inputs but {len(shapes)} input shapes")
    return list(zip(names, shapes))


def _layer_tops(layer: Layer, bottoms: list[Shape], given: dict[str, Shape],
                used: set[str]) -> list[Shape | None]:
    ntop = len(layer.top)
    if layer.type in SOURCES or layer.type in USER_SIZED:
        own = SOURCES[layer.type](layer, ntop) if layer.type in SOURCES else [None] * ntop
        used.update(t for t in layer.top if t in given)
        return [_blob_fits(layer, given.get(t, s)) for t, s in zip(layer.top, own)]
    rule = RULES.get(layer.type)
    if rule is None:
        raise FcnkitError(f"{where(layer)}: no shape rule for layer type {layer.type!r}")
    tops = rule(layer, bottoms, ntop)
    if len(tops) < ntop:
        raise FcnkitError(f"{where(layer)}: has {ntop} tops, the layer makes {len(tops)}")
    return [_blob_fits(layer, top) for top in tops[:ntop]]


def _blob_fits(layer: Layer, shape: Shape | None) -> Shape | None:
    """Caffe's Blob::Reshape checks: at most 32 axes, no negative dim, count <= INT_MAX."""
    if shape is None:
        return None
    if len(shape) > MAX_BLOB_AXES or any(d < 0 for d in shape):
        raise FcnkitError(f"{where(layer)}: blob shape {list(shape)} has a negative dim or more "
                          f"than {MAX_BLOB_AXES} axes")
    if _count(shape) > INT_MAX:
        raise FcnkitError(f"{where(layer)}: blob shape {list(shape)} holds {_count(shape)} "
                          f"values; Caffe's limit is INT_MAX ({INT_MAX})")
    return shape


# ---- learnable parameter shapes

def _conv_params(transposed: bool):
    def rule(layer: Layer, bottoms: list[Shape]) -> list[Shape]:
        w, axis = _spatial(layer, bottoms[0])
        p = layer.convolution_param
        cin, cout = bottoms[0][axis], p.num_output
        weight = (cin, cout // p.group) if transposed else (cout, cin // p.group)
        return [(*weight, *w.kernel)] + [(cout,)] * p.bias_term
    return rule


def _ip_params(layer: Layer, bottoms: list[Shape]) -> list[Shape]:
    p = layer.inner_product_param
    b = bottoms[0]
    k = _count(b[_axis(p.axis, len(b), layer):])
    return [(k, p.num_output) if p.transpose else (p.num_output, k)] + [(p.num_output,)] * p.bias_term


def _scale_params(layer: Layer, bottoms: list[Shape]) -> list[Shape]:
    if len(bottoms) == 2:
        return [bottoms[1]] * layer.scale_param.bias_term
    axis, span = _operand_span(layer, "scale_param", bottoms[0])
    shape = bottoms[0][axis:axis + span]
    return [shape] * (1 + layer.scale_param.bias_term)


def _bias_params(layer: Layer, bottoms: list[Shape]) -> list[Shape]:
    if len(bottoms) == 2:
        return []
    axis, span = _operand_span(layer, "bias_param", bottoms[0])
    return [bottoms[0][axis:axis + span]]


def _channels(b: Shape) -> int:
    return 1 if len(b) == 1 else b[1]


PARAM_RULES: dict[str, Callable[[Layer, list[Shape]], list[Shape]]] = {
    "Convolution": _conv_params(transposed=False),
    "Deconvolution": _conv_params(transposed=True),
    "InnerProduct": _ip_params,
    "Scale": _scale_params,
    "Bias": _bias_params,
    "BatchNorm": lambda layer, b: [(_channels(b[0]),), (_channels(b[0]),), (1,)],
    "PReLU": lambda layer, b: [() if layer.prelu_param.channel_shared else (_channels(b[0]),)],
    "Embed": lambda layer, b: [(layer.embed_param.input_dim, layer.embed_param.num_output)]
    + [(layer.embed_param.num_output,)] * layer.embed_param.bias_term,
    "Parameter": lambda layer, b: [_blob_shape(layer.parameter_param.shape)],
}
_UNSUPPORTED_PARAMS = frozenset({"LSTM", "RNN", "Recurrent"})


def param_shapes(net: caffe_pb2.NetParameter, sizes: Sizes | None = None,
                 phase: str | int | None = None) -> "OrderedDict[str, list[Shape]]":
    """Layer name -> shapes of its learnable blobs, in Caffe's order, for layers that have any."""
    found: OrderedDict[str, list[Shape]] = OrderedDict()
    for ls in layer_shapes(net, sizes, phase):
        if ls.layer.type in _UNSUPPORTED_PARAMS:
            raise FcnkitError(f"{where(ls.layer)}: parameter shapes of {ls.layer.type} are not supported")
        rule = PARAM_RULES.get(ls.layer.type)
        shapes = rule(ls.layer, ls.bottoms) if rule else []
        if shapes:
            found[ls.layer.name] = shapes
    return found
