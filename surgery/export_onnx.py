"""Export a Caffe deploy net + weights to ONNX with Caffe's semantics at every input size.

Why: Caffe files are losing their consumers (OpenCV 5 dropped its Caffe importer, TensorRT 10
has no Caffe parser), and generic converters get FCN details wrong: Crop offsets, grouped
Deconvolution, ceil-mode pooling with Caffe's pad clip. fcnkit already runs these nets exactly
(solvers.engine); the exporter reads the TEST-phase net through that engine (options parsed
and validated once, weights loaded with Caffe's name/shape rules) and lowers each layer to ONNX
nodes built with `onnx.helper`.

Opset 17 (OPSET): within what OpenCV 4.x's importer, TensorRT 8.6/10 and onnxruntime >= 1.13
read, new enough for Shape(start, end), ReduceSum's axes input and single-axis Softmax (13+).
Inputs are NCHW float32 with symbolic N, H, W (dim_params "N", "H", "W"); `size=(H, W)` fixes
them (and N to the prototxt's batch), making every shape a constant: no Shape/Range nodes are
left, which OpenCV 4.x needs (its Shape op refuses symbolic input sizes).

Caffe's size rules carried explicitly, so the graph is right at any input size:
- Crop: Slice from crop_param's offsets (checked against netgen's coordinate map) to
  offset + the reference blob's *runtime* size (Shape of bottom 1).
- Pooling: Caffe's ceil((in + 2p - k) / s) + 1 with its pad clip (drop a last window starting
  in the padding when p > 0). ONNX's own ceil_mode is used only where it provably agrees
  (MAX or AVE with p = 0 and k >= s); otherwise the input is padded explicitly to Caffe's
  window count (-inf for MAX, 0 for AVE) and pooled unpadded, and AVE divides by Caffe's
  divisor (the window clipped to the *padded* input) computed from the runtime size.
- Convolution / Deconvolution (groups, dilation): Conv / ConvTranspose with Caffe's pads; the
  weight layouts are ONNX's as they are.
- LRN across channels is ONNX LRN (same definition for odd sizes); within channel is
  AveragePool of x^2 over an n x n zero-padded patch, as Caffe builds it.

Layers: every type the engine runs at test time except data sources and losses, which a
deploy net does not have (EXPORTERS lists them); anything else is an ExportError naming the
layer and type.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from netgen.coord_map import BlobGraph, crop_offsets
from netgen.errors import FcnkitError
from netgen.fileio import check_writable, write_bytes_atomic
from netgen.geometry import where
from netgen.proto import caffe_pb2

OPSET = 17
INT_MAX = np.iinfo(np.int64).max
FLT_MAX = float(np.finfo(np.float32).max)  # Caffe's max pooling starts from -FLT_MAX


class ExportError(FcnkitError):
    """A net or weights the exporter cannot carry over (message names file / layer / type)."""


@dataclass
class Preprocessing:
    """What a consumer does to an image before the net, per input top (recorded as metadata).

    channel_order: the order the net expects ("BGR" for Caffe-trained colour inputs, "as-is"
    for non-colour inputs such as HHA or depth); mean: subtracted per channel, in the net's
    order; scale: multiplied after the mean (1: the net's own Scale layers are in the graph).
    """
    channel_order: str = "as-is"
    mean: tuple[float, ...] = ()
    scale: float = 1.0

    def as_dict(self) -> dict:
        return {"layout": "NCHW", "dtype": "float32", "channel_order": self.channel_order,
                "mean": list(self.mean), "scale": self.scale}


ORDERS = ("BGR", "RGB", "as-is")
Overrides = Mapping[str, Mapping[str, object]]   # input top or "*" -> Preprocessing fields


def _split_top(text: str) -> tuple[str, str]:
    top, eq, value = text.partition("=")
    return (top.strip(), value) if eq else ("*", text)


def preprocessing_from_args(means: Sequence[str] = (), orders: Sequence[str] = (),
                            scales: Sequence[str] = ()) -> dict[str, dict[str, object]]:
    """CLI values "[TOP=]value" as overrides {top or "*": {field: value}}; ExportError if bad."""
    out: dict[str, dict[str, object]] = {}
    for flag, items, parse in (
            ("--mean", means, lambda v: tuple(float(x) for x in v.split(","))),
            ("--channel-order", orders,
             lambda v: ORDERS[[o.lower() for o in ORDERS].index(v.lower())]),
            ("--input-scale", scales, float)):
        fld = {"--mean": "mean", "--channel-order": "channel_order", "--input-scale": "scale"}[flag]
        for text in items:
            top, value = _split_top(text)
            try:
                parsed = parse(value.strip())
            except ValueError:
                raise ExportError(f"{flag} {text!r}: expected [TOP=]" + {
                    "mean": "V,V,V (numbers)", "channel_order": " | ".join(ORDERS),
                    "scale": "a number"}[fld]) from None
            out.setdefault(top, {})[fld] = parsed
    return out


def _preprocessing(top: str, channels: int, overrides: Overrides) -> Preprocessing:
    """Defaults (3 channels: BGR minus the VOC mean, as the reference FCNs), then overrides."""
    from netgen.presets import VOC_MEAN

    pre = Preprocessing("BGR", tuple(VOC_MEAN)) if channels == 3 else Preprocessing()
    for key in ("*", top):
        for fld, value in overrides.get(key, {}).items():
            setattr(pre, fld, value)
    if pre.mean and len(pre.mean) != channels:
        raise ExportError(f"--mean for input {top!r}: {len(pre.mean)} values for {channels} "
                          "channels")
    return pre


# ------------------------------------------------------------------------ graph building

class Graph:
    """Nodes, initializers and unique names for one ONNX graph; int64 shape arithmetic that is
    folded to constants when every operand is known (a fixed-size export has no shape ops)."""

    def __init__(self, fp16: bool):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.used: set[str] = set()
        self.fp16 = fp16
        # Caffe top -> the ONNX name the current layer's node making it must get (set per layer)
        self.tops: dict[str, str] = {}

    def name(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def op(self, op_type: str, inputs: Sequence[str], base: str, outputs: int | Sequence[str] = 1,
           **attrs) -> str | list[str]:
        """Append a node; returns its output name (a list when `outputs` is a count > 1 or names).

        A node named after one of the current layer's Caffe tops outputs that top's ONNX name.
        """
        if isinstance(outputs, int):
            names = ([self.tops.pop(base)] if outputs == 1 and base in self.tops else
                     [self.name(f"{base}_{i}" if outputs > 1 else base) for i in range(outputs)])
        else:
            names = [self.tops.pop(n, n) for n in outputs]
        self.nodes.append(helper.make_node(op_type, list(inputs), names,
                                           name=self.name(f"{base}/{op_type}"), **attrs))
        return names[0] if isinstance(outputs, int) and outputs == 1 else names

    def const(self, base: str, array: np.ndarray) -> str:
        """An initializer (int64 as is; float arrays float32)."""
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, base: str, array: np.ndarray) -> str:
        """A learned blob: float32, or float16 on file and cast to float32 (--fp16)."""
        array = np.ascontiguousarray(array, np.float32)
        if not self.fp16:
            return self.const(base, array)
        stored = self.const(f"{base}_fp16", array.astype(np.float16))
        return self.op("Cast", [stored], base, to=TensorProto.FLOAT)

    def scalar(self, base: str, value: float) -> str:
        return self.const(base, np.asarray(value, np.float32))

    # ---- int64 vectors: numpy arrays (known) or tensor names (runtime)
    def ints(self, v, base: str = "ints") -> str:
        return v if isinstance(v, str) else self.const(base, np.asarray(v, np.int64).reshape(-1))

    def iop(self, op_type: str, *args, base: str = "shape") -> np.ndarray | str:
        """Elementwise int64 Add/Sub/Mul/Div/Min/Max/GreaterOrEqual, Concat: folded if known.
        Div is floor division; callers use it on non-negative numerators only (ONNX truncates)."""
        if all(not isinstance(a, str) for a in args):
            a = [np.asarray(x, np.int64).reshape(-1) for x in args]
            fold = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.floor_divide,
                    "Min": np.minimum, "Max": np.maximum,
                    "GreaterOrEqual": lambda x, y: (x >= y).astype(np.int64),
                    "Concat": lambda *xs: np.concatenate(xs)}[op_type]
            return fold(*a)
        names = [self.ints(a) for a in args]
        if op_type == "Concat":
            return self.op("Concat", names, base, axis=0)
        if op_type == "GreaterOrEqual":
            return self.op("Cast", [self.op(op_type, names, base)], base, to=TensorProto.INT64)
        return self.op(op_type, names, base)


# ------------------------------------------------------------------------ the exporter

@dataclass
class Blob:
    """An ONNX tensor standing for one version of a Caffe blob."""
    name: str
    shape: tuple[int, ...]     # at the engine's build size: ndim and channels are exact


Lowering = Callable[["Exporter", caffe_pb2.LayerParameter, object, list[Blob], list[np.ndarray]],
                    list[str]]
EXPORTERS: dict[str, Lowering] = {}


def exports(*types: str):
    def deco(fn: Lowering) -> Lowering:
        for t in types:
            EXPORTERS[t] = fn
        return fn
    return deco


# Layers a deploy net does not have; named in the error so the user knows what to give.
NOT_DEPLOY = {"Python", "Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData",
              "SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss", "Accuracy"}


class Exporter:
    """Lower the layers of an engine Net (weights loaded) to one ONNX graph."""

    def __init__(self, net, static: bool, fp16: bool):
        self.net = net
        self.static = static
        self.g = Graph(fp16)

    # ---- shapes
    def dims(self, b: Blob, start: int, end: int | None = None) -> np.ndarray | str:
        """Runtime sizes of axes [start, end) of `b`: constants in a fixed-size export."""
        end = len(b.shape) if end is None else end
        if self.static:
            return np.asarray(b.shape[start:end], np.int64)
        return self.g.op("Shape", [b.name], f"{b.name}_shape", start=start, end=end)


def broadcastable(array: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A param blob laid on axes [axis, axis + array.ndim) of an ndim-axis tensor."""
    return array.reshape(array.shape + (1,) * (ndim - axis - array.ndim))


def _conv_attrs(impl) -> dict:
    (ph, pw), (kh, kw) = impl.pad, impl.kernel
    return dict(kernel_shape=[kh, kw], strides=list(impl.stride), pads=[ph, pw, ph, pw],
                dilations=list(impl.dilation), group=impl.group)


@exports("Convolution", "Deconvolution")
def _conv(ex: Exporter, lp, impl, x, params):
    inputs = [x[0].name, ex.g.weight(f"{lp.name}_weight", params[0])]
    if impl.bias_term:
        inputs.append(ex.g.weight(f"{lp.name}_bias", params[1]))
    op = "Conv" if lp.type == "Convolution" else "ConvTranspose"
    return [ex.g.op(op, inputs, lp.top[0], **_conv_attrs(impl))]


def _onnx_ceil_agrees(k: int, s: int, p: int) -> bool:
    """ONNX ceil_mode gives Caffe's windows at every size: no pad (Caffe's clip is off, and no
    last window can start past the input when k >= s). AVE then also divides alike."""
    return p == 0 and k >= s


@exports("Pooling")
def _pooling(ex: Exporter, lp, impl, x, params):
    g, b = ex.g, x[0]
    if impl.global_pooling:
        return [g.op("GlobalMaxPool" if impl.method == "MAX" else "GlobalAveragePool", [b.name],
                     lp.top[0])]
    k, s, p = impl.kernel, impl.stride, impl.pad
    native = not impl.ceil or all(_onnx_ceil_agrees(*w) for w in zip(k, s, p))
    if native:   # floor mode never clips (pad < kernel); ceil mode where ONNX agrees
        attrs = dict(kernel_shape=list(k), strides=list(s), pads=[p[0], p[1], p[0], p[1]],
                     ceil_mode=int(impl.ceil))
        if impl.method == "MAX":
            return [g.op("MaxPool", [b.name], lp.top[0], **attrs)]
        if p == (0, 0) or not impl.ceil:   # every window inside the padded input: k*k divisor
            return [g.op("AveragePool", [b.name], lp.top[0], count_include_pad=1, **attrs)]
    # Caffe's window count per axis: ceil((in + 2p - k) / s) + 1, minus 1 if the last window
    # starts in the padding (p > 0); pad the input to exactly those windows.
    size = ex.dims(b, 2, 4)
    k_, s_, p_ = (np.asarray(v, np.int64) for v in (k, s, p))
    span = g.iop("Sub", g.iop("Add", size, 2 * p_), k_)
    last = g.iop("Div", g.iop("Add", span, s_ - 1), s_) if impl.ceil else g.iop("Div", span, s_)
    clip = g.iop("Mul", g.iop("GreaterOrEqual", g.iop("Mul", last, s_), g.iop("Add", size, p_)),
                 (p_ > 0).astype(np.int64))
    last = g.iop("Sub", last, clip)                          # out - 1
    extra = g.iop("Sub", g.iop("Sub", g.iop("Add", g.iop("Mul", last, s_), k_), size), p_)
    pads = g.iop("Concat", np.zeros(2, np.int64), p_, np.zeros(2, np.int64), extra)
    fill = -np.inf if impl.method == "MAX" else 0.0
    padded = g.op("Pad", [b.name, g.ints(pads, f"{lp.name}_pads"),
                          g.scalar(f"{lp.name}_fill", fill)], f"{lp.name}_padded", mode="constant")
    attrs = dict(kernel_shape=list(k), strides=list(s))
    if impl.method == "MAX":   # a window wholly past the input (k < s) gives Caffe's -FLT_MAX
        y = g.op("MaxPool", [padded], f"{lp.name}_max", **attrs)
        return [g.op("Max", [y, g.scalar("neg_flt_max", -FLT_MAX)], lp.top[0])]
    sums = g.op("Mul", [g.op("AveragePool", [padded], f"{lp.name}_mean", **attrs),
                        g.scalar(f"{lp.name}_area", float(k[0] * k[1]))], f"{lp.name}_sum")
    # divisor per output index: min(start + k, in + p) - start, start = i*s - p (Caffe)
    divisors = []
    for axis in range(2):
        if isinstance(last, str):
            pick = lambda v, what: g.op("Slice", [v, g.ints([axis]), g.ints([axis + 1])],
                                        f"{lp.name}_{what}")
            n = g.op("Squeeze", [g.op("Add", [pick(last, "last"), g.ints([1])], f"{lp.name}_n1")],
                     f"{lp.name}_n")
            i = g.op("Range", [g.const("zero_i", np.asarray(0, np.int64)), n,
                               g.const("one_i", np.asarray(1, np.int64))], f"{lp.name}_i")
            start = g.op("Sub", [g.op("Mul", [i, g.ints([s[axis]])], f"{lp.name}_is"),
                                 g.ints([p[axis]])], f"{lp.name}_start")
            limit = g.op("Add", [pick(size, "size"), g.ints([p[axis]])], f"{lp.name}_lim")
            end = g.op("Min", [g.op("Add", [start, g.ints([k[axis]])], f"{lp.name}_ks"), limit],
                       f"{lp.name}_end")
            d = g.op("Cast", [g.op("Sub", [end, start], f"{lp.name}_count")], f"{lp.name}_div",
                     to=TensorProto.FLOAT)
        else:
            starts = np.arange(int(last[axis]) + 1) * s[axis] - p[axis]
            d = np.minimum(starts + k[axis], int(size[axis]) + p[axis]) - starts
            d = g.const(f"{lp.name}_div", d.astype(np.float32))
        divisors.append(d)
    rows = g.op("Unsqueeze", [divisors[0], g.ints([1])], f"{lp.name}_rows")
    area = g.op("Mul", [rows, divisors[1]], f"{lp.name}_divisor")
    return [g.op("Div", [sums, area], lp.top[0])]


@exports("LRN")
def _lrn(ex: Exporter, lp, impl, x, params):
    g, b = ex.g, x[0]
    if impl.across:
        return [g.op("LRN", [b.name], lp.top[0], size=impl.n, alpha=impl.alpha, beta=impl.beta,
                     bias=impl.k)]
    pre = (impl.n - 1) // 2   # Caffe: AVE pooling of x^2 over n x n, zero pad counted, then power
    sq = g.op("Mul", [b.name, b.name], f"{lp.name}_sq")
    mean = g.op("AveragePool", [sq], f"{lp.name}_mean", kernel_shape=[impl.n, impl.n],
                pads=[pre] * 4, count_include_pad=1)
    scale = g.op("Add", [g.op("Mul", [mean, g.scalar("alpha", impl.alpha)], f"{lp.name}_am"),
                         g.scalar("one", 1.0)], f"{lp.name}_scale")
    return [g.op("Mul", [b.name, g.op("Pow", [scale, g.scalar("neg_beta", -impl.beta)],
                                       f"{lp.name}_pow")], lp.top[0])]


@exports("Crop")
def _crop(ex: Exporter, lp, impl, x, params):
    g, (b, like) = ex.g, x
    p = lp.crop_param
    axis = impl.axis(p.axis, len(b.shape))
    n = len(b.shape) - axis
    offsets = [0] * n if not p.offset else list(p.offset) * (n if len(p.offset) == 1 else 1)
    starts = np.asarray(offsets, np.int64)
    ends = g.iop("Add", ex.dims(like, axis), starts, base=f"{lp.name}_ends")
    return [g.op("Slice", [b.name, g.ints(starts, f"{lp.name}_starts"),
                           g.ints(ends, f"{lp.name}_ends"),
                           g.ints(np.arange(axis, axis + n), f"{lp.name}_axes")], lp.top[0])]


@exports("Eltwise")
def _eltwise(ex: Exporter, lp, impl, x, params):
    g = ex.g
    if impl.op == 0:   # PROD: ONNX Mul takes two inputs
        return [_chain(g, "Mul", [b.name for b in x], lp.top[0])]
    if impl.op == 2:
        return [g.op("Max", [b.name for b in x], lp.top[0])]
    terms = [b.name if c == 1 else g.op("Mul", [b.name, g.scalar(f"{lp.name}_coeff", c)],
                                        f"{lp.name}_term") for b, c in zip(x, impl.coeff)]
    return [g.op("Sum", terms, lp.top[0])]


def _chain(g: Graph, op: str, names: list[str], out: str) -> str:
    acc = names[0]
    for i, n in enumerate(names[1:]):
        acc = g.op(op, [acc, n], out if i == len(names) - 2 else f"{out}_part")
    return acc


def _operand(ex: Exporter, lp, x: list[Blob], params: list[np.ndarray], axis: int) -> str:
    """Scale / Bias operand: the learned blob or bottom 1, laid out to broadcast from `axis`."""
    ndim = len(x[0].shape)
    if len(x) == 2:
        extra = ndim - axis - len(x[1].shape)
        if extra <= 0:
            return x[1].name
        axes = np.arange(len(x[1].shape), len(x[1].shape) + extra)
        return ex.g.op("Unsqueeze", [x[1].name, ex.g.ints(axes)], f"{lp.name}_operand")
    return ex.g.weight(f"{lp.name}_{lp.type.lower()}", broadcastable(params[0], ndim, axis))


@exports("Scale")
def _scale(ex: Exporter, lp, impl, x, params):
    p = lp.scale_param
    axis = impl.axis(p.axis, len(x[0].shape))
    y = ex.g.op("Mul", [x[0].name, _operand(ex, lp, x, params, axis)],
                f"{lp.top[0]}_scaled" if p.bias_term else lp.top[0])
    if not p.bias_term:
        return [y]
    bias = ex.g.weight(f"{lp.name}_bias", broadcastable(params[-1], len(x[0].shape), axis))
    return [ex.g.op("Add", [y, bias], lp.top[0])]


@exports("Bias")
def _bias(ex: Exporter, lp, impl, x, params):
    axis = impl.axis(lp.bias_param.axis, len(x[0].shape))
    return [ex.g.op("Add", [x[0].name, _operand(ex, lp, x, params, axis)], lp.top[0])]


@exports("BatchNorm")
def _batch_norm(ex: Exporter, lp, impl, x, params):
    if not impl.global_stats:
        raise ExportError(f"{where(lp)}: use_global_stats false normalises with batch statistics; "
                          "a deploy net uses the stored ones")
    mean, var, factor = (np.asarray(a, np.float64) for a in params)
    inv = 0.0 if factor.reshape(-1)[0] == 0 else 1.0 / factor.reshape(-1)[0]
    a = 1.0 / np.sqrt(var * inv + impl.eps)
    ndim = len(x[0].shape)
    g = ex.g
    centred = g.op("Sub", [x[0].name, g.weight(f"{lp.name}_mean",
                                               broadcastable(mean * inv, ndim, 1))],
                   f"{lp.name}_centred")
    return [g.op("Mul", [centred, g.weight(f"{lp.name}_inv_std", broadcastable(a, ndim, 1))],
                 lp.top[0])]


@exports("InnerProduct")
def _inner_product(ex: Exporter, lp, impl, x, params):
    g, b = ex.g, x[0]
    p = impl.p
    axis = impl.axis(p.axis, len(b.shape))
    w = params[0] if p.transpose else params[0].T
    flat = g.op("Flatten", [b.name], f"{lp.name}_flat", axis=axis)
    y = g.op("MatMul", [flat, g.weight(f"{lp.name}_weight", w)], f"{lp.name}_mm")
    if p.bias_term:
        y = g.op("Add", [y, g.weight(f"{lp.name}_bias", params[1])], f"{lp.name}_biased")
    shape = g.iop("Concat", ex.dims(b, 0, axis), np.asarray([p.num_output], np.int64))
    return [g.op("Reshape", [y, g.ints(shape, f"{lp.name}_shape")], lp.top[0])]


def _unary(op_type: str, **attrs):
    def lower(ex: Exporter, lp, impl, x, params):
        return [ex.g.op(op_type, [x[0].name], lp.top[0], **attrs)]
    return lower


EXPORTERS.update({"Sigmoid": _unary("Sigmoid"), "TanH": _unary("Tanh"), "AbsVal": _unary("Abs"),
                  "BNLL": _unary("Softplus"), "Dropout": _unary("Identity")})


@exports("ReLU")
def _relu(ex: Exporter, lp, impl, x, params):
    slope = lp.relu_param.negative_slope
    if slope:
        return [ex.g.op("LeakyRelu", [x[0].name], lp.top[0], alpha=slope)]
    return [ex.g.op("Relu", [x[0].name], lp.top[0])]


@exports("ELU")
def _elu(ex: Exporter, lp, impl, x, params):
    return [ex.g.op("Elu", [x[0].name], lp.top[0], alpha=lp.elu_param.alpha)]


def _affine(ex: Exporter, lp, name: str, scale: float, shift: float) -> str:
    """shift + scale * x as nodes (none when it is x)."""
    g, y = ex.g, name
    if scale != 1:
        y = g.op("Mul", [y, g.scalar(f"{lp.name}_scale", scale)], f"{lp.name}_scaled")
    if shift != 0:
        y = g.op("Add", [y, g.scalar(f"{lp.name}_shift", shift)], f"{lp.name}_shifted")
    return y


@exports("Power")
def _power(ex: Exporter, lp, impl, x, params):
    p, g = lp.power_param, ex.g
    if p.power * p.scale == 0:   # a constant, as Caffe (and the engine)
        value = float(np.power(np.float32(p.shift), np.float32(p.power)))
        zeros = g.op("Mul", [x[0].name, g.scalar("zero", 0.0)], f"{lp.name}_zero")
        return [g.op("Add", [zeros, g.scalar(f"{lp.name}_value", value)], lp.top[0])]
    u = _affine(ex, lp, x[0].name, p.scale, p.shift)
    if p.power == 1:
        return [g.op("Identity", [u], lp.top[0])]
    return [g.op("Pow", [u, g.scalar(f"{lp.name}_power", p.power)], lp.top[0])]


@exports("Exp")
def _exp(ex: Exporter, lp, impl, x, params):
    y = ex.g.op("Exp", [_affine(ex, lp, x[0].name, impl.inner, 0.0)], f"{lp.name}_exp")
    return [ex.g.op("Mul", [y, ex.g.scalar(f"{lp.name}_outer", impl.outer)], lp.top[0])]


@exports("Log")
def _log(ex: Exporter, lp, impl, x, params):
    p = lp.log_param
    y = ex.g.op("Log", [_affine(ex, lp, x[0].name, p.scale, p.shift)], f"{lp.name}_ln")
    return [ex.g.op("Mul", [y, ex.g.scalar(f"{lp.name}_base", impl.base_scale)], lp.top[0])]


@exports("PReLU")
def _prelu(ex: Exporter, lp, impl, x, params):
    slope = params[0]
    slope = slope.reshape(1) if slope.ndim == 0 else broadcastable(slope, len(x[0].shape), 1)
    return [ex.g.op("PRelu", [x[0].name, ex.g.weight(f"{lp.name}_slope", slope)], lp.top[0])]


@exports("Threshold")
def _threshold(ex: Exporter, lp, impl, x, params):
    t = ex.g.scalar(f"{lp.name}_t", lp.threshold_param.threshold)
    above = ex.g.op("Greater", [x[0].name, t], f"{lp.name}_above")
    return [ex.g.op("Cast", [above], lp.top[0], to=TensorProto.FLOAT)]


@exports("Clip")
def _clip(ex: Exporter, lp, impl, x, params):
    p = lp.clip_param
    lo = ex.g.op("Min", [x[0].name, ex.g.scalar(f"{lp.name}_max", p.max)], f"{lp.name}_lo")
    return [ex.g.op("Max", [lo, ex.g.scalar(f"{lp.name}_min", p.min)], lp.top[0])]


@exports("Swish")
def _swish(ex: Exporter, lp, impl, x, params):
    gate = ex.g.op("Sigmoid", [_affine(ex, lp, x[0].name, lp.swish_param.beta, 0.0)],
                   f"{lp.name}_gate")
    return [ex.g.op("Mul", [x[0].name, gate], lp.top[0])]


@exports("Softmax")
def _softmax(ex: Exporter, lp, impl, x, params):
    return [ex.g.op("Softmax", [x[0].name], lp.top[0],
                    axis=impl.axis(lp.softmax_param.axis, len(x[0].shape)))]


@exports("Concat")
def _concat(ex: Exporter, lp, impl, x, params):
    p = lp.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else impl.axis(p.axis, len(x[0].shape))
    return [ex.g.op("Concat", [b.name for b in x], lp.top[0], axis=axis)]


@exports("Split")
def _split(ex: Exporter, lp, impl, x, params):
    return [ex.g.op("Identity", [x[0].name], top) for top in lp.top]


@exports("Silence")
def _silence(ex: Exporter, lp, impl, x, params):
    return []


@exports("Slice")
def _slice(ex: Exporter, lp, impl, x, params):
    g, b, p = ex.g, x[0], lp.slice_param
    axis = p.slice_dim if p.HasField("slice_dim") else impl.axis(p.axis, len(b.shape))
    if not p.slice_point:
        return g.op("Split", [b.name], lp.top[0], outputs=list(lp.top), axis=axis)
    bounds = [0, *p.slice_point, INT_MAX]
    return [g.op("Slice", [b.name, g.ints([lo]), g.ints([hi]), g.ints([axis])], top)
            for top, lo, hi in zip(lp.top, bounds, bounds[1:])]


@exports("Flatten")
def _flatten(ex: Exporter, lp, impl, x, params):
    b, p = x[0], lp.flatten_param
    start = impl.axis(p.axis, len(b.shape))
    end = impl.axis(p.end_axis, len(b.shape), "end_axis")
    shape = ex.g.iop("Concat", ex.dims(b, 0, start), np.asarray([-1], np.int64),
                     ex.dims(b, end + 1))
    return [ex.g.op("Reshape", [b.name, ex.g.ints(shape, f"{lp.name}_shape")], lp.top[0])]


@exports("Reshape")
def _reshape(ex: Exporter, lp, impl, x, params):
    b, p, g = x[0], lp.reshape_param, ex.g
    ndim = len(b.shape)
    start = p.axis if p.axis >= 0 else ndim + p.axis + 1
    end = ndim if p.num_axes == -1 else start + p.num_axes
    pieces = [ex.dims(b, 0, start)]
    for i, d in enumerate(p.shape.dim):
        pieces.append(ex.dims(b, start + i, start + i + 1) if d == 0 else np.asarray([d], np.int64))
    pieces.append(ex.dims(b, end))
    shape = g.iop("Concat", *pieces)
    return [g.op("Reshape", [b.name, g.ints(shape, f"{lp.name}_shape")], lp.top[0])]


@exports("ArgMax")
def _argmax(ex: Exporter, lp, impl, x, params):
    p = lp.argmax_param
    if not p.HasField("axis") or p.top_k != 1 or p.out_max_val:
        raise ExportError(f"{where(lp)}: only argmax_param with an axis, top_k 1 and no "
                          "out_max_val is exported")
    idx = ex.g.op("ArgMax", [x[0].name], f"{lp.name}_index",
                  axis=impl.axis(p.axis, len(x[0].shape)), keepdims=1)
    return [ex.g.op("Cast", [idx], lp.top[0], to=TensorProto.FLOAT)]


@exports("Tile")
def _tile(ex: Exporter, lp, impl, x, params):
    b, p = x[0], lp.tile_param
    reps = np.ones(len(b.shape), np.int64)
    reps[impl.axis(p.axis, len(b.shape))] = p.tiles
    return [ex.g.op("Tile", [b.name, ex.g.ints(reps, f"{lp.name}_reps")], lp.top[0])]


def _reduce(g: Graph, op: str, x: str, axes: Sequence[int], base: str, keepdims: int) -> str:
    """Reduce* over `axes`: an input for ReduceSum (opset 13+), an attribute for the others
    until opset 18."""
    if op == "ReduceSum":
        return g.op(op, [x, g.ints(list(axes), f"{base}_axes")], base, keepdims=keepdims)
    return g.op(op, [x], base, axes=list(axes), keepdims=keepdims)


@exports("Reduction")
def _reduction(ex: Exporter, lp, impl, x, params):
    g, b, p = ex.g, x[0], lp.reduction_param
    axis = impl.axis(p.axis, len(b.shape))
    op = {1: "ReduceSum", 2: "ReduceL1", 3: "ReduceSumSquare", 4: "ReduceMean"}[p.operation]
    shape = g.iop("Concat", ex.dims(b, 0, axis), np.asarray([-1], np.int64))
    flat = g.op("Reshape", [b.name, g.ints(shape, f"{lp.name}_shape")], f"{lp.name}_flat")
    y = _reduce(g, op, flat, [axis], f"{lp.name}_reduced", 0)
    return [g.op("Mul", [y, g.scalar(f"{lp.name}_coeff", p.coeff)], lp.top[0])]


@exports("MVN")
def _mvn(ex: Exporter, lp, impl, x, params):
    g, b, p = ex.g, x[0], lp.mvn_param
    first = 1 if p.across_channels else 2   # per item, or per (item, channel)
    axes = list(range(first, len(b.shape)))
    d = g.op("Sub", [b.name, _reduce(g, "ReduceMean", b.name, axes, f"{lp.name}_mean", 1)],
             f"{lp.name}_centred" if p.normalize_variance else lp.top[0])
    if not p.normalize_variance:
        return [d]
    var = _reduce(g, "ReduceMean", g.op("Mul", [d, d], f"{lp.name}_sq"), axes, f"{lp.name}_var", 1)
    std = g.op("Add", [g.op("Sqrt", [var], f"{lp.name}_std0"), g.scalar(f"{lp.name}_eps", p.eps)],
               f"{lp.name}_std")
    return [g.op("Div", [d, std], lp.top[0])]


# ------------------------------------------------------------------------ net + weights

@dataclass
class Result:
    """What export() made: the model, its serialized bytes (validated), facts for a report."""
    model: onnx.ModelProto
    data: bytes
    inputs: list[str]
    outputs: list[str]
    warnings: list[str] = field(default_factory=list)


def _fixed_layer(lp: caffe_pb2.LayerParameter) -> bool:
    """A layer whose blobs are not learned and start from a constant filler (the at-once net's
    scale_pool3/4, a recipe's input scale): Caffe runs it with the filler value when the
    caffemodel lacks it, so the export may too."""
    if lp.type not in ("Scale", "Bias") or not lp.param or any(p.lr_mult != 0 for p in lp.param):
        return False
    filler = lp.scale_param.filler if lp.type == "Scale" else lp.bias_param.filler
    return filler.type == "constant" and not (lp.type == "Scale" and lp.scale_param.bias_term)


def load_net(deploy: str | os.PathLike, weights: str | os.PathLike | Mapping,
             size: tuple[int, int] | None = None):
    """The TEST-phase engine Net of `deploy` with `weights` loaded, Input H, W set to `size`.

    Raises ExportError when the weights lack a layer with learned blobs (the export would
    carry random filler values) or do not fit it (blob count, shape: named by file and layer).
    """
    from netgen.legacy import upgrade_net
    from netgen.netstate import filter_net, make_state
    from netgen.schema import read_net
    from solvers.engine import Net
    from surgery.caffemodel import load_weights

    param = filter_net(upgrade_net(read_net(deploy)), make_state("TEST"))
    if size is not None:
        for lp in param.layer:
            if lp.type == "Input":
                for shape in lp.input_param.shape:
                    if len(shape.dim) != 4:
                        raise ExportError(f"{deploy}: {where(lp)} has a {len(shape.dim)}-axis "
                                          "input; --size applies to N x C x H x W inputs")
                    shape.dim[2:] = list(size)
    for lp in param.layer:
        if lp.type in NOT_DEPLOY:
            raise ExportError(f"{deploy}: {where(lp)} is not exportable: give a deploy net "
                              "(Input layers, no data or loss layers)")
        if lp.type not in EXPORTERS and lp.type != "Input":
            raise ExportError(f"{deploy}: {where(lp)}: layer type {lp.type!r} has no ONNX export "
                              f"(exported: {', '.join(sorted(EXPORTERS))})")
    net = Net(param, "TEST")
    loaded = weights if isinstance(weights, Mapping) else load_weights(weights)
    missing = [rec.name for rec, lp in zip(net.layers, param.layer)
               if rec.params and rec.name not in loaded and not _fixed_layer(lp)]
    if missing:
        raise ExportError(f"{weights}: no weights for layer {missing[0]!r} "
                          f"({len(missing)} layer{'s' if len(missing) > 1 else ''} missing"
                          f"{': ' + ', '.join(missing[:5]) if len(missing) > 1 else ''}); "
                          "is this the caffemodel of this net?")
    try:   # Caffe's CopyTrainedLayersFrom: by name, blob counts and shapes (legacy dims) checked
        net.copy_from(loaded)
    except FcnkitError as e:
        raise ExportError(f"{weights}: {str(e).removeprefix('weights: ')}") from None
    return net


def _version_names(layers) -> list[list[str]]:
    """ONNX name of each layer's tops: a net input (top of a layer without bottoms) keeps the
    Caffe name, which the consumer feeds; any other blob's last version keeps it too, and the
    versions an in-place layer rewrites (or the rewrites of an input) get `<blob>@<layer>`."""
    last: dict[str, int] = {}
    source: dict[str, int] = {}
    for i, lp in enumerate(layers):
        for t in lp.top:
            last[t] = i
            if not len(lp.bottom):
                source.setdefault(t, i)
    return [[t if source.get(t, last[t]) == i else f"{t}@{lp.name}" for t in lp.top]
            for i, lp in enumerate(layers)]


def _check_crop(graph: BlobGraph, i: int, lp, warnings: list[str]) -> None:
    """Compare a Crop's offsets with netgen's coordinate map (when it relates the bottoms)."""
    try:
        m = graph.between(*graph.bottoms[i])
        axis, mapped = crop_offsets(m, where(lp))
    except FcnkitError:
        return
    p = lp.crop_param
    given = list(p.offset) or [0]
    n = max(len(given), len(mapped))
    given, mapped = (v * n if len(v) == 1 else v for v in (given, mapped))
    if axis != p.axis or given != mapped:
        warnings.append(f"{where(lp)}: offsets {given} on axis {p.axis}, the coordinate map says "
                        f"{mapped} on axis {axis}; exported as written (Caffe's behaviour)")


def export(deploy: str | os.PathLike, weights: str | os.PathLike | Mapping, *,
           size: tuple[int, int] | None = None, argmax: bool = False, fp16: bool = False,
           preprocessing: Overrides | None = None) -> Result:
    """The ONNX model of `deploy` (TEST phase) with `weights`; see the module docstring.

    size: (H, W) to fix instead of symbolic N, H, W. argmax: add `label` outputs (int64,
    N x H x W) = argmax over the classes of each 4-D output. fp16: weights stored as float16
    (half the file), cast to float32 in the graph. preprocessing: Preprocessing fields per
    input top ("*": every input) over the defaults (BGR minus the VOC mean for 3-channel
    inputs), recorded as metadata `fcnkit.preprocessing` (JSON).
    Raises ExportError / FcnkitError naming the file, layer and type.
    """
    net = load_net(deploy, weights, size)
    layers = list(net.net_param.layer)
    ex = Exporter(net, static=size is not None, fp16=fp16)
    graph = BlobGraph(net.net_param)
    names = _version_names(layers)
    shapes = {name: tuple(blob.shape) for name, blob in net.blobs.items()}
    current: dict[str, Blob] = {}
    inputs: list[onnx.ValueInfoProto] = []
    warnings: list[str] = []
    input_shapes = [shapes[t] for lp in layers if lp.type == "Input" for t in lp.top]
    shared = len({s[2:] for s in input_shapes}) == 1
    for version in names:
        ex.g.used.update(version)
    for i, (lp, rec) in enumerate(zip(layers, net.layers)):
        if lp.type == "Input":
            for top, name in zip(lp.top, names[i]):
                shape = shapes[top]
                dims: list = list(shape)
                if size is None and len(shape) == 4:
                    suffix = "" if shared else f"_{top}"
                    dims = ["N", shape[1], f"H{suffix}", f"W{suffix}"]
                inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
                current[top] = Blob(name, shape)
            continue
        if lp.type == "Crop":
            _check_crop(graph, i, lp, warnings)
        bottoms = [current[b] for b in lp.bottom]
        params = [p.tensor.detach().cpu().float().reshape(s).numpy()
                  for p, s in zip(rec.params, rec.param_shapes)]
        ex.g.tops = dict(zip(lp.top, names[i]))
        outs = EXPORTERS[lp.type](ex, lp, rec.impl, bottoms, params)
        for top, out in zip(lp.top, outs):
            current[top] = Blob(out, shapes[top])
    outputs = [current[name] for name in net.outputs]
    out_infos = [helper.make_tensor_value_info(b.name, TensorProto.FLOAT, [None] * len(b.shape))
                 for b in outputs]
    labels = []
    if argmax:
        for b in outputs:
            if len(b.shape) != 4:
                continue
            suffix = b.name[len("score"):] if b.name.startswith("score") else f"_{b.name}"
            label = "label" + suffix   # score -> label, score_sem -> label_sem
            label = ex.g.name(label)
            ex.g.op("ArgMax", [b.name], label, outputs=[label], axis=1, keepdims=0)
            out_infos.append(helper.make_tensor_value_info(label, TensorProto.INT64, [None] * 3))
            labels.append(label)
        if not labels:
            raise ExportError(f"{deploy}: --argmax needs a 4-D (N, C, H, W) output; outputs: "
                              f"{', '.join(b.name for b in outputs)}")
    model = helper.make_model(
        helper.make_graph(ex.g.nodes, Path(str(deploy)).parent.name or "net", inputs, out_infos,
                          ex.g.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fcnkit",
        doc_string=f"{deploy} + {weights if not isinstance(weights, Mapping) else 'weights'} "
                   "exported by fcnkit (Caffe semantics)")
    model.ir_version = 8   # opset 17's IR: readable by onnxruntime >= 1.12 and OpenCV 4.x
    overrides = preprocessing or {}
    unknown = [t for t in overrides if t != "*" and t not in {i.name for i in inputs}]
    if unknown:
        raise ExportError(f"{deploy}: no input named {unknown[0]!r} to record preprocessing for "
                          f"(inputs: {', '.join(i.name for i in inputs)})")
    pre = {i.name: _preprocessing(i.name, shapes[i.name][1] if len(shapes[i.name]) > 1 else 0,
                                  overrides) for i in inputs}
    meta = {
        "fcnkit.inputs": json.dumps([i.name for i in inputs]),
        "fcnkit.outputs": json.dumps([b.name for b in outputs] + labels),
        "fcnkit.preprocessing": json.dumps({k: v.as_dict() for k, v in pre.items()}),
        "fcnkit.opset": str(OPSET),
        "fcnkit.dynamic": json.dumps(size is None),
        "fcnkit.weights_dtype": "float16" if fp16 else "float32",
    }
    helper.set_model_props(model, meta)
    try:
        data = model.SerializeToString()   # once: checked, then written (FCN-8s: 538 MB)
        onnx.checker.check_model(data, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{deploy}: the exported graph does not validate: "
                          f"{str(e).strip().splitlines()[0]}") from None
    return Result(model, data, [i.name for i in inputs], [b.name for b in outputs] + labels,
                  warnings)


def export_file(deploy: str | os.PathLike, weights: str | os.PathLike, out: str | os.PathLike,
                **options) -> Result:
    """export() written to `out` atomically (nothing is left behind on any error)."""
    check_writable(out)
    result = export(deploy, weights, **options)
    write_bytes_atomic(out, result.data)
    return result
