"""Export a Caffe deploy net + weights as a plain PyTorch module: generated source + state_dict.

Why this form: a `.py` file of ordinary torch code (nn.Conv2d / nn.ConvTranspose2d modules
and torch.nn.functional calls, one line per Caffe layer) and a `torch.save`d state_dict run
with torch alone, at any input size, can be read and edited, and load in any torch >= 1.12
without fcnkit, unpickling code or TorchScript (deprecated) or torch.export's guards (Caffe's
ceil-mode size rules are shape-dependent branches it would specialise to one size).

    out.py  defines `class Net(torch.nn.Module)` with INPUTS, OUTPUTS, PREPROCESSING and a
            `load(weights=None)` that builds it and loads out.pt (beside it by default);
            forward(*inputs) takes N x C x H x W float32 tensors in INPUTS order and returns
            the OUTPUTS tensor (a tuple when there are several).
    out.pt  the state_dict (Caffe layer names, made into identifiers).

The three Caffe rules torch lacks are written into the file as small functions: caffe_pool
(Caffe's ceil-mode window count, pad clip and AVE divisor), crop (offsets, reference blob's
runtime size) and lrn. Layers: those listed in EMITTERS; any other is an ExportError naming
the layer and type.
"""
from __future__ import annotations

import keyword
import os
import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from netgen.fileio import atomic_write, check_writable, write_text_atomic
from netgen.geometry import where

from .export_onnx import ExportError, Overrides, _preprocessing, broadcastable, load_net

HELPERS = '''
def _caffe_pool(x, method, kernel, stride, pad, ceil):
    """Caffe's pooling: ceil((in + 2p - k) / s) + 1 windows (floor with round_mode FLOOR),
    one fewer when the last starts in the padding (p > 0); MAX over the unpadded input, AVE
    divided by the window clipped to the padded input."""
    size = x.shape[2:]
    out = []
    for n, k, s, p in zip(size, kernel, stride, pad):
        span = n + 2 * p - k
        o = (-(-span // s) if ceil else span // s) + 1
        if p > 0 and (o - 1) * s >= n + p:
            o -= 1
        out.append(o)
    extra = [(o - 1) * s + k - n - p for o, s, k, n, p in zip(out, stride, kernel, size, pad)]
    padded = F.pad(x, (pad[1], extra[1], pad[0], extra[0]),
                   value=-math.inf if method == "MAX" else 0.0)
    if method == "MAX":   # a window wholly past the input gives Caffe's -FLT_MAX
        return F.max_pool2d(padded, kernel, stride).clamp_min(-torch.finfo(torch.float32).max)
    sums = F.avg_pool2d(padded, kernel, stride, divisor_override=1)
    div = [torch.tensor([min(i * s - p + k, n + p) - (i * s - p) for i in range(o)],
                        dtype=x.dtype, device=x.device)
           for n, k, s, p, o in zip(size, kernel, stride, pad, out)]
    return sums / (div[0][:, None] * div[1][None, :])


def _caffe_crop(x, like, axis, offsets):
    """Caffe's Crop: x cut to like's size on the axes from `axis` on, starting at `offsets`."""
    index = [slice(None)] * axis
    for i, off in enumerate(offsets):
        index.append(slice(off, off + like.shape[axis + i]))
    return x[tuple(index)]


def _caffe_lrn(x, n, alpha, beta, k, across):
    """Caffe's LRN: across channels x / (k + alpha/n sum x^2)^beta over n channels; within
    channel x / (1 + alpha/n^2 sum x^2)^beta over an n x n zero-padded patch."""
    pre = (n - 1) // 2
    sq = x * x
    if across:
        mean = F.avg_pool3d(F.pad(sq, (0, 0, 0, 0, pre, pre)).unsqueeze(1), (n, 1, 1), 1).squeeze(1)
        return x * (k + alpha * mean).pow(-beta)
    mean = F.avg_pool2d(F.pad(sq, (pre, pre, pre, pre)), n, 1)
    return x * (1.0 + alpha * mean).pow(-beta)


def _caffe_mvn(x, across, normalize, eps):
    """Caffe's MVN per item (across channels) or per (item, channel): x - mean, then divided
    by the population std + eps (eps after the square root)."""
    rows = x.shape[0] if across else x.shape[0] * x.shape[1]
    d = x.reshape(rows, -1)
    d = d - d.mean(dim=1, keepdim=True)
    if normalize:
        d = d / (d.square().mean(dim=1, keepdim=True).sqrt() + eps)
    return d.reshape(x.shape)


def _caffe_reduce(x, axis, op, coeff):
    """Caffe's Reduction over `axis` and every axis after it (SUM, ASUM, SUMSQ, MEAN)."""
    flat = x.reshape(tuple(x.shape[:axis]) + (-1,))
    term = {"SUM": flat, "ASUM": flat.abs(), "SUMSQ": flat.square(), "MEAN": flat}[op]
    if op == "MEAN" and flat.shape[-1]:
        coeff = coeff / flat.shape[-1]
    return term.sum(dim=-1) * coeff
'''


class Source:
    """The generated file: __init__ lines (modules, parameters) and forward lines."""

    def __init__(self, net):
        self.net = net
        self.init: list[str] = []
        self.body: list[str] = []
        self.state: dict[str, torch.Tensor] = {}
        self.attrs: set[str] = set()

    def attr(self, base: str) -> str:
        name = ident(base)
        while name in self.attrs:
            name += "_"
        self.attrs.add(name)
        return name

    def param(self, base: str, array: np.ndarray) -> str:
        """A Parameter attribute holding `array` (in the state_dict); returns `self.<name>`."""
        name = self.attr(base)
        self.init.append(f"self.{name} = nn.Parameter(torch.empty({tuple(array.shape)}), "
                         "requires_grad=False)")
        self.state[name] = torch.from_numpy(np.ascontiguousarray(array, np.float32))
        return f"self.{name}"


# names the generated file uses itself; a blob called so gets a trailing "_"
RESERVED = frozenset({"self", "torch", "F", "nn", "math", "Path", "Net", "load", "INPUTS",
                      "OUTPUTS", "PREPROCESSING"})


def ident(name: str) -> str:
    """A Python identifier for a Caffe name ("conv1/3x3-a" -> "conv1_3x3_a"); never one of
    the file's own names (RESERVED) nor a helper's (_caffe_*)."""
    name = re.sub(r"\W", "_", name)
    if not name or name[0].isdigit() or keyword.iskeyword(name) or name.startswith("_caffe_"):
        name = "_" + name
    return name + "_" if name in RESERVED else name


Emitter = Callable[[Source, object, object, list[str], list[tuple], list[np.ndarray]], str]
EMITTERS: dict[str, Emitter] = {}


def emits(*types: str):
    def deco(fn: Emitter) -> Emitter:
        for t in types:
            EMITTERS[t] = fn
        return fn
    return deco


@emits("Convolution", "Deconvolution")
def _conv(src, lp, impl, x, shapes, params):
    name = src.attr(lp.name)
    conv = lp.type == "Convolution"
    cin = shapes[0][1]
    args = (f"{cin}, {impl.num_output}, {tuple(impl.kernel)}, stride={tuple(impl.stride)}, "
            f"padding={tuple(impl.pad)}, dilation={tuple(impl.dilation)}, groups={impl.group}, "
            f"bias={impl.bias_term}")
    src.init.append(f"self.{name} = nn.{'Conv2d' if conv else 'ConvTranspose2d'}({args})")
    src.state[f"{name}.weight"] = torch.from_numpy(params[0].copy())
    if impl.bias_term:
        src.state[f"{name}.bias"] = torch.from_numpy(params[1].copy())
    return f"self.{name}({x[0]})"


@emits("Pooling")
def _pool(src, lp, impl, x, shapes, params):
    if impl.global_pooling:
        op = "amax" if impl.method == "MAX" else "mean"
        return f"{x[0]}.{op}(dim=(2, 3), keepdim=True)"
    return (f"_caffe_pool({x[0]}, {impl.method!r}, {tuple(impl.kernel)}, {tuple(impl.stride)}, "
            f"{tuple(impl.pad)}, {impl.ceil})")


@emits("Crop")
def _crop(src, lp, impl, x, shapes, params):
    p = lp.crop_param
    axis = impl.axis(p.axis, len(shapes[0]))
    n = len(shapes[0]) - axis
    offsets = [0] * n if not p.offset else list(p.offset) * (n if len(p.offset) == 1 else 1)
    return f"_caffe_crop({x[0]}, {x[1]}, {axis}, {offsets})"


@emits("LRN")
def _lrn(src, lp, impl, x, shapes, params):
    return f"_caffe_lrn({x[0]}, {impl.n}, {impl.alpha!r}, {impl.beta!r}, {impl.k!r}, {impl.across})"


@emits("Eltwise")
def _eltwise(src, lp, impl, x, shapes, params):
    if impl.op == 0:
        return " * ".join(x)
    if impl.op == 2:
        return f"torch.stack([{', '.join(x)}]).amax(dim=0)"
    return " + ".join(b if c == 1 else f"{b} * {c!r}" for b, c in zip(x, impl.coeff))


def _operand(src, lp, x, shapes, params, axis) -> str:
    ndim = len(shapes[0])
    if len(x) == 2:
        extra = ndim - axis - len(shapes[1])
        return x[1] if extra <= 0 else f"{x[1]}.reshape({x[1]}.shape + (1,) * {extra})"
    return src.param(f"{lp.name}_{lp.type.lower()}", broadcastable(params[0], ndim, axis))


@emits("Scale")
def _scale(src, lp, impl, x, shapes, params):
    p = lp.scale_param
    axis = impl.axis(p.axis, len(shapes[0]))
    y = f"{x[0]} * {_operand(src, lp, x, shapes, params, axis)}"
    if p.bias_term:
        y += f" + {src.param(f'{lp.name}_bias', broadcastable(params[-1], len(shapes[0]), axis))}"
    return y


@emits("Bias")
def _bias(src, lp, impl, x, shapes, params):
    axis = impl.axis(lp.bias_param.axis, len(shapes[0]))
    return f"{x[0]} + {_operand(src, lp, x, shapes, params, axis)}"


@emits("BatchNorm")
def _batch_norm(src, lp, impl, x, shapes, params):
    if not impl.global_stats:
        raise ExportError(f"{where(lp)}: use_global_stats false is not a deploy setting")
    mean, var, factor = (np.asarray(a, np.float64) for a in params)
    inv = 0.0 if factor.reshape(-1)[0] == 0 else 1.0 / factor.reshape(-1)[0]
    ndim = len(shapes[0])
    m = src.param(f"{lp.name}_mean", broadcastable(mean * inv, ndim, 1))
    a = src.param(f"{lp.name}_inv_std", broadcastable(1.0 / np.sqrt(var * inv + impl.eps), ndim, 1))
    return f"({x[0]} - {m}) * {a}"


@emits("InnerProduct")
def _inner_product(src, lp, impl, x, shapes, params):
    p = impl.p
    axis = impl.axis(p.axis, len(shapes[0]))
    w = src.param(f"{lp.name}_weight", params[0] if p.transpose else params[0].T)
    y = f"{x[0]}.flatten({axis}) @ {w}"
    if p.bias_term:
        y += f" + {src.param(f'{lp.name}_bias', params[1])}"
    return y


@emits("Softmax")
def _softmax(src, lp, impl, x, shapes, params):
    return f"torch.softmax({x[0]}, dim={impl.axis(lp.softmax_param.axis, len(shapes[0]))})"


@emits("Concat")
def _concat(src, lp, impl, x, shapes, params):
    p = lp.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else impl.axis(p.axis, len(shapes[0]))
    return f"torch.cat([{', '.join(x)}], dim={axis})"


@emits("ReLU")
def _relu(src, lp, impl, x, shapes, params):
    slope = lp.relu_param.negative_slope
    return f"F.leaky_relu({x[0]}, {slope!r})" if slope else f"F.relu({x[0]})"


@emits("Flatten")
def _flatten(src, lp, impl, x, shapes, params):
    p = lp.flatten_param
    ndim = len(shapes[0])
    return f"{x[0]}.flatten({impl.axis(p.axis, ndim)}, {impl.axis(p.end_axis, ndim, 'end_axis')})"


@emits("Power")
def _power(src, lp, impl, x, shapes, params):
    p = lp.power_param
    if p.power * p.scale == 0:
        return f"torch.full_like({x[0]}, {p.shift!r}).pow({p.power!r})"
    return f"({x[0]} * {p.scale!r} + {p.shift!r}).pow({p.power!r})"


@emits("PReLU")
def _prelu(src, lp, impl, x, shapes, params):
    slope = params[0] if params[0].ndim == 0 else broadcastable(params[0], len(shapes[0]), 1)
    return f"torch.where({x[0]} > 0, {x[0]}, {x[0]} * {src.param(f'{lp.name}_slope', slope)})"


@emits("Reshape")
def _reshape(src, lp, impl, x, shapes, params):
    p = lp.reshape_param
    ndim = len(shapes[0])
    start = p.axis if p.axis >= 0 else ndim + p.axis + 1
    end = ndim if p.num_axes == -1 else start + p.num_axes
    dims = [f"{x[0]}.shape[{start + i}]" if d == 0 else str(d) for i, d in enumerate(p.shape.dim)]
    return (f"{x[0]}.reshape(tuple({x[0]}.shape[:{start}]) + ({', '.join(dims)},) + "
            f"tuple({x[0]}.shape[{end}:]))")


@emits("Slice")
def _slice(src, lp, impl, x, shapes, params):
    p = lp.slice_param
    axis = p.slice_dim if p.HasField("slice_dim") else impl.axis(p.axis, len(shapes[0]))
    if not p.slice_point:
        return f"{x[0]}.chunk({len(lp.top)}, dim={axis})"
    return f"{x[0]}.tensor_split({list(p.slice_point)}, dim={axis})"


@emits("MVN")
def _mvn(src, lp, impl, x, shapes, params):
    p = lp.mvn_param
    return f"_caffe_mvn({x[0]}, {p.across_channels}, {p.normalize_variance}, {p.eps!r})"


@emits("Reduction")
def _reduction(src, lp, impl, x, shapes, params):
    p = lp.reduction_param
    op = {1: "SUM", 2: "ASUM", 3: "SUMSQ", 4: "MEAN"}[p.operation]
    return f"_caffe_reduce({x[0]}, {impl.axis(p.axis, len(shapes[0]))}, {op!r}, {p.coeff!r})"


@emits("ArgMax")
def _argmax(src, lp, impl, x, shapes, params):
    p = lp.argmax_param
    if not p.HasField("axis") or p.top_k != 1 or p.out_max_val:
        raise ExportError(f"{where(lp)}: only argmax_param with an axis, top_k 1 and no "
                          "out_max_val is exported")
    return f"{x[0]}.argmax(dim={impl.axis(p.axis, len(shapes[0]))}, keepdim=True).to({x[0]}.dtype)"


@emits("Tile")
def _tile(src, lp, impl, x, shapes, params):
    reps = [1] * len(shapes[0])
    reps[impl.axis(lp.tile_param.axis, len(shapes[0]))] = lp.tile_param.tiles
    return f"{x[0]}.repeat({reps})"


def _template(text: str) -> Emitter:
    """An emitter filling {x} (bottom 0), {lp} and {impl} into an expression."""
    return lambda src, lp, impl, x, shapes, params: text.format(x=x[0], lp=lp, impl=impl)


EMITTERS.update({
    "Dropout": _template("{x}"), "Sigmoid": _template("torch.sigmoid({x})"),
    "TanH": _template("torch.tanh({x})"), "AbsVal": _template("torch.abs({x})"),
    "BNLL": _template("F.softplus({x})"),   # log(1 + e^x), overflow-safe as Caffe's
    "ELU": _template("F.elu({x}, {lp.elu_param.alpha!r})"),
    "Exp": _template("torch.exp({x} * {impl.inner!r}) * {impl.outer!r}"),
    "Swish": _template("{x} * torch.sigmoid({x} * {lp.swish_param.beta!r})"),
    "Threshold": _template("({x} > {lp.threshold_param.threshold!r}).to({x}.dtype)"),
    "Clip": _template("torch.clamp_min(torch.clamp_max({x}, {lp.clip_param.max!r}), "
                      "{lp.clip_param.min!r})"),
    "Log": _template("torch.log({x} * {lp.log_param.scale!r} + {lp.log_param.shift!r}) "
                     "* {impl.base_scale!r}"),
})


def generate(deploy: str | os.PathLike, weights: str | os.PathLike | Mapping,
             preprocessing: Overrides | None = None) -> tuple[str, dict[str, torch.Tensor]]:
    """(module source, state_dict) for `deploy` (TEST phase) with `weights`."""
    net = load_net(deploy, weights)
    layers = list(net.net_param.layer)
    # one variable per Caffe blob, reassigned by in-place layers as Caffe overwrites the blob
    variables: dict[str, str] = {}
    for lp in layers:
        for top in lp.top:
            if top not in variables:
                name = ident(top)
                while name in variables.values():
                    name += "_"
                variables[top] = name
    names = [[variables[t] for t in lp.top] for lp in layers]
    src = Source(net)
    current: dict[str, str] = {}
    shapes = {name: tuple(blob.shape) for name, blob in net.blobs.items()}
    inputs: list[str] = []
    for i, (lp, rec) in enumerate(zip(layers, net.layers)):
        if lp.type == "Input":
            for top, name in zip(lp.top, names[i]):
                current[top] = name
                inputs.append(top)
            continue
        if lp.type == "Silence":
            continue
        if lp.type == "Split":
            for top, name in zip(lp.top, names[i]):
                src.body.append(f"{name} = {current[lp.bottom[0]]}")
                current[top] = name
            continue
        emit = EMITTERS.get(lp.type)
        if emit is None:
            raise ExportError(f"{deploy}: {where(lp)}: layer type {lp.type!r} has no PyTorch "
                              f"export (exported: {', '.join(sorted(EMITTERS))}, Split, Silence)")
        params = [p.tensor.detach().cpu().float().reshape(s).numpy()
                  for p, s in zip(rec.params, rec.param_shapes)]
        expr = emit(src, lp, rec.impl, [current[b] for b in lp.bottom],
                    [shapes[b] for b in lp.bottom], params)
        src.body.append(f"{', '.join(names[i])} = {expr}  # {lp.name} ({lp.type})")
        current.update(zip(lp.top, names[i]))
    outputs = list(net.outputs)
    unknown = [t for t in preprocessing or {} if t != "*" and t not in inputs]
    if unknown:
        raise ExportError(f"{deploy}: no input named {unknown[0]!r} to record preprocessing for "
                          f"(inputs: {', '.join(inputs)})")
    pre = {top: _preprocessing(top, shapes[top][1] if len(shapes[top]) > 1 else 0,
                               preprocessing or {}).as_dict() for top in inputs}
    result = ", ".join(current[o] for o in outputs)   # one tensor, or a tuple of several
    text = "\n".join([
        f'"""{Path(str(deploy)).name} as a plain PyTorch module, generated by fcnkit '
        "(python -m surgery export ... OUT.py).",
        "",
        "Caffe's semantics at every input size; needs torch only. Use:",
        "    net = load()            # weights from the .pt file beside this one",
        f"    score = net({', '.join(ident(t) for t in inputs)})   # N x C x H x W float32 tensors",
        '"""',
        "import math",
        "from pathlib import Path",
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        f"INPUTS = {tuple(inputs)!r}",
        f"OUTPUTS = {tuple(outputs)!r}",
        f"PREPROCESSING = {pre!r}",
        HELPERS,
        "",
        "class Net(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        *(f"        {line}" for line in src.init or ["pass"]),
        "",
        f"    def forward(self, {', '.join(ident(t) for t in inputs)}):",
        *(f"        {line}" for line in src.body),
        f"        return {result}",
        "",
        "",
        "def load(weights=None):",
        '    """Net() with the state_dict beside this file (or at `weights`), in eval mode."""',
        "    net = Net()",
        "    path = Path(weights) if weights else Path(__file__).with_suffix('.pt')",
        "    net.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))",
        "    return net.eval()",
        "",
    ])
    return text, src.state


def export_file(deploy: str | os.PathLike, weights: str | os.PathLike, out: str | os.PathLike,
                preprocessing: Overrides | None = None) -> tuple[Path, Path]:
    """Write OUT.py (module source) and OUT.pt (state_dict), each atomically."""
    out = Path(out)
    if out.suffix != ".py":
        raise ExportError(f"{out}: a PyTorch export is written as a .py file (and its .pt)")
    check_writable(out)
    text, state = generate(deploy, weights, preprocessing)
    compile(text, str(out), "exec")   # a generated file that does not parse is our bug: fail here
    pt = out.with_suffix(".pt")
    with atomic_write(pt, "wb") as f:
        torch.save(state, f)
    write_text_atomic(out, text)
    return out, pt
