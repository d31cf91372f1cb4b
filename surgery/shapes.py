"""Parameter shapes (and the fillers Caffe would use) of every layer of a NetParameter.

Transplanting weights needs the target's parameter shapes without running Caffe. They follow
from the layer options plus the shapes of the blobs flowing in (a convolution's weights are
(Cout, Cin/group, kh, kw), so Cin must be known), so the net is walked from its data layers
computing blob shapes with Caffe's output-size rules. Data layers whose shape lives outside the
prototxt (Python, Data, ImageData...) get `input_channels` channels and `input_size` spatial
dims; unknown sizes stay None and only matter where a parameter depends on them
(InnerProduct), which is then reported.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2

from .legacy import upgrade_net

Shape = tuple  # of int or None (unknown extent)
_DATA_TYPES = {"Data", "ImageData", "WindowData", "HDF5Data", "Python", "AnnotatedData"}
_SAME_SHAPE = {"ReLU", "Dropout", "LRN", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp",
               "Log", "ELU", "Threshold", "MVN", "Softmax", "Swish", "Clip", "BatchNorm",
               "Scale", "Bias", "PReLU", "Eltwise"}
_SCALARS = {"SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
            "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "ContrastiveLoss", "Accuracy"}


@dataclass(frozen=True)
class Param:
    """One learnable blob of a layer: its shape and the filler Caffe initialises it with."""
    shape: tuple[int, ...]
    filler: caffe_pb2.FillerParameter


class _Walk:
    """State of the walk: blob name -> shape, plus the options for unknown data layers."""

    def __init__(self, input_channels, input_size):
        self.blobs: dict[str, Shape | None] = {}
        self.input_channels = input_channels
        self.input_size = tuple(input_size) if input_size else (None, None)

    def bottom(self, layer, i: int = 0) -> Shape:
        if i >= len(layer.bottom):
            raise FcnkitError(f"layer {layer.name!r}: needs {i + 1} bottom(s), has "
                              f"{len(layer.bottom)}")
        name = layer.bottom[i]
        if name not in self.blobs:
            raise FcnkitError(f"layer {layer.name!r}: bottom {name!r} is not produced by any "
                              "earlier layer")
        shape = self.blobs[name]
        if shape is None:
            raise FcnkitError(f"layer {layer.name!r}: the shape of bottom {name!r} cannot be "
                              "inferred (it comes from a layer whose output shape is unknown)")
        return shape

    def channels(self, top: str, first: bool) -> int:
        if isinstance(self.input_channels, dict):
            if top in self.input_channels:
                return self.input_channels[top]
            return 3 if first else 1
        return self.input_channels if first else 1


def _filler(param, name: str, default: caffe_pb2.FillerParameter | None = None):
    if param.HasField(name):
        return getattr(param, name)
    return default if default is not None else caffe_pb2.FillerParameter()


def _constant(value: float) -> caffe_pb2.FillerParameter:
    return caffe_pb2.FillerParameter(type="constant", value=value)


def _per_axis(values: Sequence[int], h: int | None, w: int | None, n: int, default: int,
              what: str, layer) -> list[int]:
    """Caffe's rule for kernel/stride/pad/dilation: _h/_w, or one value, or one per axis."""
    if h is not None or w is not None:
        if n != 2:
            raise FcnkitError(f"layer {layer.name!r}: {what}_h/{what}_w need 2 spatial axes")
        return [h, w]
    values = list(values)
    if not values:
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise FcnkitError(f"layer {layer.name!r}: {len(values)} {what} values for {n} spatial "
                          "axes")
    return values


def _opt(msg, name: str):
    return getattr(msg, name) if msg.HasField(name) else None


def _conv_geometry(layer, bottom: Shape):
    p = layer.convolution_param
    axis = p.axis % len(bottom)
    n = len(bottom) - axis - 1
    if not p.kernel_size and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
        raise FcnkitError(f"layer {layer.name!r}: kernel_size is required")
    kernel = _per_axis(p.kernel_size, _opt(p, "kernel_h"), _opt(p, "kernel_w"), n, 0,
                       "kernel", layer)
    stride = _per_axis(p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), n, 1, "stride", layer)
    pad = _per_axis(p.pad, _opt(p, "pad_h"), _opt(p, "pad_w"), n, 0, "pad", layer)
    dilation = _per_axis(p.dilation, None, None, n, 1, "dilation", layer)
    channels = bottom[axis]
    group = p.group
    if not p.num_output:
        raise FcnkitError(f"layer {layer.name!r}: num_output is required")
    if channels is None:
        raise FcnkitError(f"layer {layer.name!r}: the number of input channels is unknown")
    for count, what in ((channels, "input channels"), (p.num_output, "num_output")):
        if count % group:
            raise FcnkitError(f"layer {layer.name!r}: {what} {count} not divisible by group "
                              f"{group}")
    return p, axis, kernel, stride, pad, dilation, channels, group


def _convolution(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    p, axis, kernel, stride, pad, dilation, channels, group = _conv_geometry(layer, bottom)
    spatial = [None if x is None else (x + 2 * pd - ((k - 1) * d + 1)) // s + 1
               for x, k, s, pd, d in zip(bottom[axis + 1:], kernel, stride, pad, dilation)]
    params = [Param((p.num_output, channels // group, *kernel), _filler(p, "weight_filler"))]
    if p.bias_term:
        params.append(Param((p.num_output,), _filler(p, "bias_filler")))
    return [(*bottom[:axis], p.num_output, *spatial)], params


def _deconvolution(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    p, axis, kernel, stride, pad, dilation, channels, group = _conv_geometry(layer, bottom)
    spatial = [None if x is None else s * (x - 1) + (k - 1) * d + 1 - 2 * pd
               for x, k, s, pd, d in zip(bottom[axis + 1:], kernel, stride, pad, dilation)]
    params = [Param((channels, p.num_output // group, *kernel), _filler(p, "weight_filler"))]
    if p.bias_term:
        params.append(Param((p.num_output,), _filler(p, "bias_filler")))
    return [(*bottom[:axis], p.num_output, *spatial)], params


def _inner_product(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    p = layer.inner_product_param
    axis = p.axis % len(bottom)
    if any(d is None for d in bottom[axis:]):
        raise FcnkitError(f"layer {layer.name!r}: InnerProduct needs the full input size, but "
                          f"bottom {layer.bottom[0]!r} is {_fmt(bottom)} (give the input size)")
    k = math.prod(bottom[axis:])
    weight = (k, p.num_output) if p.transpose else (p.num_output, k)
    params = [Param(weight, _filler(p, "weight_filler"))]
    if p.bias_term:
        params.append(Param((p.num_output,), _filler(p, "bias_filler")))
    return [(*bottom[:axis], p.num_output)], params


def _pooling(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    p = layer.pooling_param
    if len(bottom) != 4:
        raise FcnkitError(f"layer {layer.name!r}: Pooling needs a 4-d input, got {_fmt(bottom)}")
    if p.global_pooling:
        return [(*bottom[:2], 1, 1)], []
    if not p.HasField("kernel_size") and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
        raise FcnkitError(f"layer {layer.name!r}: kernel_size is required")
    kernel = [p.kernel_h, p.kernel_w] if p.HasField("kernel_h") else [p.kernel_size] * 2
    stride = [p.stride_h, p.stride_w] if p.HasField("stride_h") else [p.stride] * 2
    pad = [p.pad_h, p.pad_w] if p.HasField("pad_h") else [p.pad] * 2
    round_up = p.round_mode == caffe_pb2.PoolingParameter.CEIL
    spatial = []
    for x, k, s, pd in zip(bottom[2:], kernel, stride, pad):
        if x is None:
            spatial.append(None)
            continue
        span = x + 2 * pd - k
        out = (-(-span // s) if round_up else span // s) + 1
        if any(pad) and (out - 1) * s >= x + pd:  # last window must start inside the image
            out -= 1
        spatial.append(out)
    return [(*bottom[:2], *spatial)], []


def _same(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    params: list[Param] = []
    if layer.type == "BatchNorm":
        c = bottom[1] if len(bottom) > 1 else 1
        params = [Param((c,), _constant(0)), Param((c,), _constant(0)), Param((1,), _constant(0))]
    elif layer.type in ("Scale", "Bias") and len(layer.bottom) == 1:
        p = layer.scale_param if layer.type == "Scale" else layer.bias_param
        axis = p.axis % len(bottom) if bottom else 0
        end = len(bottom) if p.num_axes == -1 else axis + p.num_axes
        shape = tuple(bottom[axis:end])
        default = 1.0 if layer.type == "Scale" else 0.0
        params = [Param(shape, _filler(p, "filler", _constant(default)))]
        if layer.type == "Scale" and p.bias_term:
            params.append(Param(shape, _filler(p, "bias_filler")))
    elif layer.type == "PReLU":
        p = layer.prelu_param
        shape = () if p.channel_shared else (bottom[1],)
        params = [Param(shape, _filler(p, "filler", _constant(0.25)))]
    return [bottom] * len(layer.top), params


def _scalar(layer, walk: _Walk):
    return [()] * len(layer.top), []


def _input(layer, walk: _Walk):
    shapes = [tuple(s.dim) for s in layer.input_param.shape]
    if len(shapes) == 1:
        shapes *= len(layer.top)
    if len(shapes) != len(layer.top):
        raise FcnkitError(f"layer {layer.name!r}: {len(shapes)} shapes for {len(layer.top)} tops")
    return shapes, []


def _dummy_data(layer, walk: _Walk):
    p = layer.dummy_data_param
    if p.shape:
        shapes = [tuple(s.dim) for s in p.shape]
    else:
        shapes = [tuple(d) for d in zip(p.num, p.channels, p.height, p.width)]
    if len(shapes) == 1:
        shapes *= len(layer.top)
    return shapes, []


def _memory_data(layer, walk: _Walk):
    p = layer.memory_data_param
    return [(p.batch_size, p.channels, p.height, p.width), (p.batch_size, 1, 1, 1)], []


def _data(layer, walk: _Walk):
    if layer.bottom:  # a Python layer that computes something: its output is unknown
        return [None] * len(layer.top), []
    crop = layer.transform_param.crop_size
    size = (crop, crop) if crop else walk.input_size
    return [(1, walk.channels(top, i == 0), *size) for i, top in enumerate(layer.top)], []


def _crop(layer, walk: _Walk):
    bottom, like = walk.bottom(layer, 0), walk.bottom(layer, 1)
    axis = layer.crop_param.axis % len(bottom)
    return [(*bottom[:axis], *like[axis:])], []


def _concat(layer, walk: _Walk):
    shapes = [walk.bottom(layer, i) for i in range(len(layer.bottom))]
    p = layer.concat_param
    axis = (p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim)
    axis %= len(shapes[0])
    sizes = [s[axis] for s in shapes]
    total = None if None in sizes else sum(sizes)
    return [(*shapes[0][:axis], total, *shapes[0][axis + 1:])], []


def _flatten(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    p = layer.flatten_param
    start, end = p.axis % len(bottom), p.end_axis % len(bottom)
    middle = bottom[start:end + 1]
    size = None if None in middle else math.prod(middle)
    return [(*bottom[:start], size, *bottom[end + 1:])], []


def _reshape(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    p = layer.reshape_param
    start = p.axis % (len(bottom) + 1)
    end = len(bottom) if p.num_axes == -1 else start + p.num_axes
    dims = [bottom[start + i] if d == 0 else d for i, d in enumerate(p.shape.dim)]
    if -1 in dims:
        known = [d for d in dims if d != -1]
        replaced = bottom[start:end]
        if None in known or None in replaced:
            dims = [None if d == -1 else d for d in dims]
        else:
            dims[dims.index(-1)] = math.prod(replaced) // max(1, math.prod(known))
    return [(*bottom[:start], *dims, *bottom[end:])], []


def _embed(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    p = layer.embed_param
    params = [Param((p.input_dim, p.num_output), _filler(p, "weight_filler"))]
    if p.bias_term:
        params.append(Param((p.num_output,), _filler(p, "bias_filler")))
    return [(*bottom, p.num_output)], params


def _parameter(layer, walk: _Walk):
    shape = tuple(layer.parameter_param.shape.dim)
    return [shape], [Param(shape, _constant(0))]


def _slice(layer, walk: _Walk):
    bottom = walk.bottom(layer)
    p = layer.slice_param
    axis = (p.axis if p.HasField("axis") or not p.HasField("slice_dim") else p.slice_dim)
    axis %= len(bottom)
    total = bottom[axis]
    points = list(p.slice_point)
    if points and total is not None:
        edges = [0, *points, total]
        sizes = [b - a for a, b in zip(edges, edges[1:])]
    elif total is not None:
        sizes = [total // len(layer.top)] * len(layer.top)
    else:
        sizes = [None] * len(layer.top)
    return [(*bottom[:axis], s, *bottom[axis + 1:]) for s in sizes], []


_RULES: dict[str, Callable] = {
    "Convolution": _convolution, "Deconvolution": _deconvolution,
    "InnerProduct": _inner_product, "Pooling": _pooling, "Input": _input,
    "DummyData": _dummy_data, "MemoryData": _memory_data, "Crop": _crop, "Concat": _concat,
    "Flatten": _flatten, "Reshape": _reshape, "Embed": _embed, "Parameter": _parameter,
    "Slice": _slice, "Split": _same,
    **{t: _same for t in _SAME_SHAPE}, **{t: _scalar for t in _SCALARS},
    **{t: _data for t in _DATA_TYPES},
}
_PARAM_TYPES = {"Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale", "Bias",
                "PReLU", "Embed", "Parameter"}


def _fmt(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def walk_net(net: caffe_pb2.NetParameter, *, input_channels: int | dict[str, int] = 3,
             input_size: tuple[int, int] | None = None):
    """Yield (layer, top shapes, params) through the net in order (current format)."""
    walk = _Walk(input_channels, input_size)
    for layer in upgrade_net(net).layer:
        rule = _RULES.get(layer.type)
        unknown_input = any(walk.blobs.get(b, ()) is None for b in layer.bottom)
        params: list[Param] = []
        if rule is None and not layer.bottom:  # an unknown source of data (a custom layer)
            tops = [(1, walk.channels(t, i == 0), *walk.input_size)
                    for i, t in enumerate(layer.top)]
        elif rule is None or (unknown_input and layer.type not in _PARAM_TYPES):
            tops = [None] * len(layer.top)
        else:
            tops, params = rule(layer, walk)
        for name, shape in zip(layer.top, tops):
            walk.blobs[name] = None if shape is None else tuple(shape)
        yield layer, tops, params


def net_params(net: caffe_pb2.NetParameter, **options) -> "OrderedDict[str, list[Param]]":
    """Layer name -> its learnable parameters (shape + filler), for layers that have any."""
    out: OrderedDict[str, list[Param]] = OrderedDict()
    for layer, _, params in walk_net(net, **options):
        if params:
            out[layer.name] = params
    return out


def param_shapes(net: caffe_pb2.NetParameter, **options) -> "OrderedDict[str, list[tuple]]":
    """Layer name -> parameter shapes, e.g. {'fc6': [(4096, 512, 7, 7), (4096,)]}."""
    return OrderedDict((name, [p.shape for p in params])
                       for name, params in net_params(net, **options).items())


def blob_shapes(net: caffe_pb2.NetParameter, **options) -> dict[str, Shape | None]:
    """Blob name -> shape (None entries for unknown extents)."""
    shapes: dict[str, Shape | None] = {}
    for layer, tops, _ in walk_net(net, **options):
        shapes.update(zip(layer.top, tops))
    return shapes
