"""FCN model builders: one parametrised function per architecture, written with NetSpec.

`fcn_vgg16` covers FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once (Long, Shelhamer & Darrell), with
any number of prediction heads (SIFT Flow's semantic + geometric) and several input modalities
(NYUD color+depth early fusion, color+HHA late fusion). `fcn_alexnet` is FCN-AlexNet. Layer
names, options and parameter multipliers match the published reference nets layer for layer;
every Crop offset is computed by the coordinate map (`netgen.coord_map.crop`), never typed.

Phases: "train" (dropout, loss), "val" (loss, no dropout: it is the identity at test time) and
"deploy" (no dropout, no loss, an Input layer named "input"). With `data=None` the inputs (and,
for train/val, the labels) come from an Input layer, so a net can be fed blobs directly.

A `Recipe` holds the training choices that are not architecture (fillers, loss normalisation,
dropout, a fixed input scale, solver values); the default, REFERENCE, is what the published
nets use, so the builders' output is the reference nets unless a recipe says otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .coord_map import crop
from .errors import FcnkitError
from .netspec import L, NetSpec, P
from .proto import caffe_pb2

PHASES = ("train", "val", "deploy")
FUSIONS = ("early", "late")
IGNORE_LABEL = 255
DEFAULT_SIZE = (500, 500)

# Learned weights at the base rate with weight decay, biases at twice the rate without decay.
LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
# Fixed weights (bilinear upsampling, skip scaling): never updated.
FROZEN = [dict(lr_mult=0)]
# A fixed layer that must also stay out of weight decay (the input scale).
FIXED = [dict(lr_mult=0, decay_mult=0)]
WEIGHT_FILLERS = ("msra", "xavier")
LOSS_NORMALIZATIONS = tuple(caffe_pb2.LossParameter.NormalizationMode.keys())


@dataclass(frozen=True)
class Recipe:
    """Training choices as data: what differs between fine-tuning from ImageNet weights (the
    reference) and training from zero.

    weight_filler: filler of the trunk convolutions (bias: constant 0); None leaves Caffe's
      default (constant 0), which the reference nets keep because surgery fills the trunk.
      Score layers always keep the zero default: learning starts from zero scores.
    loss_normalization: a LossParameter normalization mode name ("VALID", ...); None keeps the
      architecture's reference `normalize` flag (VGG16 false: a sum over pixels; AlexNet true).
    dropout: in-place Dropout after fc6/fc7 in train nets.
    input_scale: a fixed Scale layer `<input>_scale` (top `<input>_scaled`, lr_mult 0) between
      the input and the first convolution, as Caffe's transform_param scale; None: no layer.
    solver: solver fields replacing the model's reference solver values.
    """

    name: str = "reference"
    description: str = "the published reference nets: fine-tuning from ImageNet weights"
    weight_filler: str | None = None
    loss_normalization: str | None = None
    dropout: bool = True
    input_scale: float | None = None
    solver: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.weight_filler not in (None, *WEIGHT_FILLERS):
            raise FcnkitError(f"recipe {self.name}: weight_filler must be one of "
                              f"{', '.join(WEIGHT_FILLERS)} or None, not {self.weight_filler!r}")
        if self.loss_normalization not in (None, *LOSS_NORMALIZATIONS):
            raise FcnkitError(f"recipe {self.name}: loss_normalization must be one of "
                              f"{', '.join(LOSS_NORMALIZATIONS)} or None, not "
                              f"{self.loss_normalization!r}")
        s = self.input_scale
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))
                              or not math.isfinite(s) or s <= 0):
            raise FcnkitError(f"recipe {self.name}: input scale must be a positive number, "
                              f"not {s!r}")

    def conv_fillers(self) -> dict[str, Any]:
        """Filler options of a trunk convolution (none: Caffe's defaults)."""
        if self.weight_filler is None:
            return {}
        return dict(weight_filler=dict(type=self.weight_filler),
                    bias_filler=dict(type="constant", value=0))

    def loss_param(self, reference_normalize: bool) -> dict[str, Any]:
        if self.loss_normalization is None:
            return dict(normalize=reference_normalize, ignore_label=IGNORE_LABEL)
        return dict(normalization=self.loss_normalization, ignore_label=IGNORE_LABEL)


REFERENCE = Recipe()


@dataclass(frozen=True)
class Head:
    """One prediction head: its classes, the label top its loss reads, and its name suffix.

    Layer names get `suffix` appended (score_fr_sem, upscore2_sem, score_sem, ...) as in the
    reference SIFT Flow nets; the loss layer is named `loss`.
    """

    num_classes: int
    suffix: str = ""
    label: str = "label"
    loss: str = "loss"


@dataclass(frozen=True)
class DataSpec:
    """A Python data layer: its class, module and param_str keys (written as a dict literal)."""

    layer: str
    params: Mapping[str, Any] = field(default_factory=dict)
    module: str = "solvers.data.layers"

    def param_str(self) -> str:
        return repr(dict(self.params))


@dataclass(frozen=True)
class _Upsampling:
    """How a net reaches full resolution: skip taps fused coarse to fine, then one deconvolution."""

    skips: tuple[str, ...]
    kernel: int
    stride: int
    skip_scales: tuple[tuple[str, float], ...] = ()  # at-once: fixed scaling of each skip


VGG16_STRIDES: dict[str, _Upsampling] = {
    "32s": _Upsampling((), 64, 32),
    "16s": _Upsampling(("pool4",), 32, 16),
    "8s": _Upsampling(("pool4", "pool3"), 16, 8),
    "8s-atonce": _Upsampling(("pool4", "pool3"), 16, 8, (("pool4", 0.01), ("pool3", 0.0001))),
}
ALEXNET_STRIDES: dict[str, _Upsampling] = {"32s": _Upsampling((), 63, 32)}

# VGG16 conv blocks: output channels of each 3x3 conv; a 2x2 max pool ends each block.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_CHANNELS = 4096

# AlexNet (CaffeNet order: pool before LRN): name, kernel, channels, stride, pad, group, then.
ALEXNET_CONVS = (
    ("1", 11, 96, 4, 100, 1, ("pool", "norm")),
    ("2", 5, 256, 1, 2, 2, ("pool", "norm")),
    ("3", 3, 384, 1, 1, 1, ()),
    ("4", 3, 384, 1, 1, 2, ()),
    ("5", 3, 256, 1, 1, 2, ("pool",)),
)
ALEXNET_GROUPS = 2  # scaled AlexNet channels stay multiples of this so grouped convs divide


def scale_channels(channels: int, width: float, multiple: int = 1) -> int:
    """Hidden channel count under a width multiplier: rounded half up, at least `multiple`."""
    units = math.floor(channels * width / multiple + 0.5)
    return max(1, units) * multiple


def _check(phase: str, stride: str, strides: Mapping[str, _Upsampling], width: float,
           heads: Sequence[Head], data: DataSpec | None, recipe: Recipe) -> None:
    recipe.check()
    if phase not in PHASES:
        raise FcnkitError(f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    if stride not in strides:
        raise FcnkitError(f"stride must be one of {', '.join(strides)}, not {stride!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) \
            or not math.isfinite(width) or width <= 0:
        raise FcnkitError(f"width must be a positive number, not {width!r}")
    if not heads:
        raise FcnkitError("a net needs at least one head")
    for head in heads:
        n = head.num_classes
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise FcnkitError(f"number of classes must be a positive integer, not {n!r}")
    if phase == "deploy" and data is not None:
        raise FcnkitError("deploy nets read an Input layer: give data=None")


def _heads(num_classes: int, heads: Sequence[Head] | None) -> tuple[Head, ...]:
    return tuple(heads) if heads is not None else (Head(num_classes),)


def _source(n: NetSpec, phase: str, data: DataSpec | None, inputs: Sequence[tuple[str, int]],
            heads: Sequence[Head], size: tuple[int, int]) -> None:
    """The first layer: a Python data layer, or an Input layer named "input"."""
    labels = [] if phase == "deploy" else list(dict.fromkeys(h.label for h in heads))
    tops = [name for name, _ in inputs] + labels
    if data is None:
        shapes = [dict(dim=[1, ch, *size]) for _, ch in inputs] + [dict(dim=[1, 1, *size])] * len(labels)
        out = L.Input(name="input", shape=shapes, ntop=len(tops))
    else:
        out = L.Python(module=data.module, layer=data.layer, param_str=data.param_str(),
                       ntop=len(tops))
    for name, top in zip(tops, out if len(tops) > 1 else (out,)):
        n[name] = top


def _input_scale(n: NetSpec, name: str, recipe: Recipe):
    """The input as the first convolution reads it: itself, or scaled by the recipe's constant.

    The Scale is the identity in the coordinate map, so crop offsets do not change."""
    if recipe.input_scale is None:
        return n[name]
    n[f"{name}_scaled"] = L.Scale(n[name], filler=dict(type="constant", value=recipe.input_scale),
                                  param=FIXED, name=f"{name}_scale")
    return n[f"{name}_scaled"]


def _vgg16_trunk(n: NetSpec, bottom, width: float, dropout: bool, fillers: Mapping[str, Any],
                 sfx: str = "", first_conv: str = "conv1_1") -> dict[str, Any]:
    """conv1_1 .. fc7 of VGG16 made fully convolutional; returns the taps heads read."""
    x = bottom
    for b, block in enumerate(VGG16_BLOCKS, 1):
        for i, channels in enumerate(block, 1):
            first = (b, i) == (1, 1)
            name = first_conv if first else f"conv{b}_{i}"
            n[name + sfx] = conv = L.Convolution(
                x, kernel_size=3, stride=1, num_output=scale_channels(channels, width),
                pad=100 if first else 1, param=LEARNED, **fillers)
            n[f"relu{b}_{i}{sfx}"] = x = L.ReLU(conv, in_place=True)
        n[f"pool{b}{sfx}"] = x = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    for i, ks in ((6, 7), (7, 1)):
        n[f"fc{i}{sfx}"] = conv = L.Convolution(
            x, kernel_size=ks, stride=1, num_output=scale_channels(FC_CHANNELS, width), pad=0,
            param=LEARNED, **fillers)
        n[f"relu{i}{sfx}"] = x = L.ReLU(conv, in_place=True)
        if dropout:
            n[f"drop{i}{sfx}"] = x = L.Dropout(x, dropout_ratio=0.5, in_place=True)
    return {"pool3": n[f"pool3{sfx}"], "pool4": n[f"pool4{sfx}"], "fc7": x}


def _alexnet_trunk(n: NetSpec, bottom, width: float, dropout: bool,
                   fillers: Mapping[str, Any]) -> dict[str, Any]:
    """conv1 .. fc7 of AlexNet (CaffeNet) made fully convolutional, as FCN-AlexNet."""
    x = bottom
    for name, ks, channels, stride, pad, group, then in ALEXNET_CONVS:
        n[f"conv{name}"] = conv = L.Convolution(
            x, kernel_size=ks, stride=stride, pad=pad, group=group,
            num_output=scale_channels(channels, width, ALEXNET_GROUPS), **fillers)
        n[f"relu{name}"] = x = L.ReLU(conv, in_place=True)
        if "pool" in then:
            n[f"pool{name}"] = x = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
        if "norm" in then:
            n[f"norm{name}"] = x = L.LRN(x, local_size=5, alpha=1e-4, beta=0.75)
    for i, ks in ((6, 6), (7, 1)):
        n[f"fc{i}"] = conv = L.Convolution(
            x, kernel_size=ks, stride=1, pad=0, group=1,
            num_output=scale_channels(FC_CHANNELS, width), **fillers)
        n[f"relu{i}"] = x = L.ReLU(conv, in_place=True)
        if dropout:
            n[f"drop{i}"] = x = L.Dropout(x, dropout_ratio=0.5, in_place=True)
    return {"fc7": x}


def _score(bottom, classes: int):
    return L.Convolution(bottom, num_output=classes, kernel_size=1, pad=0, param=LEARNED)


def _upsample(bottom, classes: int, kernel: int, stride: int):
    """Deconvolution without bias and frozen (lr_mult 0): surgery fills it with bilinear weights."""
    return L.Deconvolution(bottom, convolution_param=dict(
        num_output=classes, kernel_size=kernel, stride=stride, bias_term=False), param=FROZEN)


def _head(n: NetSpec, head: Head, score, taps: Mapping[str, Any], up: _Upsampling,
          reference, phase: str, loss_param: Mapping[str, Any]) -> None:
    """From coarse scores to the full-resolution `score<suffix>` (and its loss)."""
    s, classes = head.suffix, head.num_classes
    scales = dict(up.skip_scales)
    up_name = f"upscore2{s}"
    for tap in up.skips:
        n[up_name] = upscore = _upsample(score, classes, 4, 2)
        source = taps[tap]
        if tap in scales:
            if f"scale_{tap}" not in n.tops:  # one fixed scaling shared by every head
                n[f"scale_{tap}"] = L.Scale(source, filler=dict(type="constant", value=scales[tap]),
                                            param=FROZEN)
            source = n[f"scale_{tap}"]
        n[f"score_{tap}{s}"] = skip = _score(source, classes)
        n[f"score_{tap}{s}c"] = skip_c = crop(skip, upscore)
        n[f"fuse_{tap}{s}"] = score = L.Eltwise(upscore, skip_c, operation=P.Eltwise.SUM)
        up_name = f"upscore_{tap}{s}"
    final = f"upscore{up.stride}{s}" if up.skips else f"upscore{s}"
    n[final] = upscore = _upsample(score, classes, up.kernel, up.stride)
    n[f"score{s}"] = out = crop(upscore, reference)
    if phase != "deploy":
        n[head.loss] = L.SoftmaxWithLoss(out, n[head.label], loss_param=dict(loss_param))


def fcn_vgg16(phase: str = "train", stride: str = "32s", num_classes: int = 21, *,
              data: DataSpec | None = None, width: float = 1.0,
              heads: Sequence[Head] | None = None,
              inputs: Sequence[tuple[str, int]] = (("data", 3),), fusion: str = "early",
              first_conv: str = "conv1_1", input_size: tuple[int, int] = DEFAULT_SIZE,
              recipe: Recipe = REFERENCE) -> caffe_pb2.NetParameter:
    """FCN-VGG16 at `stride` "32s" | "16s" | "8s" | "8s-atonce".

    num_classes: classes of the single head (ignored when `heads` is given).
    data: Python data layer for train/val; None reads an Input layer (1 x C x `input_size`).
    width: multiplies every hidden channel count (rounded, at least 1); scores keep the classes.
    heads: several prediction heads sharing the trunk, e.g. SIFT Flow's semantic + geometric.
    inputs: (top, channels) of each input modality. Several inputs are fused "early" (Concat
      into `data`, first conv named `first_conv`) or "late" (one trunk per input, named with the
      input as suffix, scores averaged in `score_fused`; FCN-32s with one head only).
    recipe: training choices (fillers, loss normalisation, dropout, input scale); the default
      is the reference: loss SoftmaxWithLoss, normalize false (a sum over pixels), ignore 255.
    Crop layers align to the unscaled input, so an input Scale leaves the net's layers and
    offsets as they are.
    """
    heads = _heads(num_classes, heads)
    _check(phase, stride, VGG16_STRIDES, width, heads, data, recipe)
    if not inputs:
        raise FcnkitError("a net needs at least one input")
    if len(inputs) > 1 and fusion not in FUSIONS:
        raise FcnkitError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    up = VGG16_STRIDES[stride]
    dropout = phase == "train" and recipe.dropout
    fillers, loss = recipe.conv_fillers(), recipe.loss_param(False)
    n = NetSpec()
    _source(n, phase, data, inputs, heads, input_size)
    if len(inputs) > 1 and fusion == "late":
        if up.skips or len(heads) > 1:
            raise FcnkitError("late fusion is defined for FCN-32s with a single head")
        scores = []
        for name, _ in inputs:
            taps = _vgg16_trunk(n, _input_scale(n, name, recipe), width, dropout, fillers,
                                sfx=name, first_conv=first_conv)
            n[f"score_fr{name}"] = score = _score(taps["fc7"], heads[0].num_classes)
            scores.append(score)
        n.score_fused = L.Eltwise(*scores, operation=P.Eltwise.SUM,
                                  coeff=[1.0 / len(scores)] * len(scores))
        _head(n, heads[0], n.score_fused, taps, up, n[inputs[0][0]], phase, loss)
        return n.to_proto()
    if len(inputs) > 1:
        n.data = L.Concat(*(n[name] for name, _ in inputs))
    bottom = n[inputs[0][0]] if len(inputs) == 1 else n.data
    top = inputs[0][0] if len(inputs) == 1 else "data"
    taps = _vgg16_trunk(n, _input_scale(n, top, recipe), width, dropout, fillers,
                        first_conv=first_conv)
    for head in heads:
        n[f"score_fr{head.suffix}"] = score = _score(taps["fc7"], head.num_classes)
        _head(n, head, score, taps, up, bottom, phase, loss)
    return n.to_proto()


def fcn_alexnet(phase: str = "train", stride: str = "32s", num_classes: int = 21, *,
                data: DataSpec | None = None, width: float = 1.0,
                heads: Sequence[Head] | None = None, in_channels: int = 3,
                input_size: tuple[int, int] = DEFAULT_SIZE,
                recipe: Recipe = REFERENCE) -> caffe_pb2.NetParameter:
    """FCN-AlexNet (stride "32s" only: one 63x63 stride-32 deconvolution, crop offset 18).

    As the reference: no parameter multipliers on the trunk, grouped conv2/4/5, and the loss
    normalised over valid pixels (normalize true). Width-scaled trunk channels stay even so the
    grouped convolutions divide. `recipe` as for fcn_vgg16.
    """
    heads = _heads(num_classes, heads)
    _check(phase, stride, ALEXNET_STRIDES, width, heads, data, recipe)
    n = NetSpec()
    _source(n, phase, data, (("data", in_channels),), heads, input_size)
    taps = _alexnet_trunk(n, _input_scale(n, "data", recipe), width,
                          phase == "train" and recipe.dropout, recipe.conv_fillers())
    for head in heads:
        n[f"score_fr{head.suffix}"] = score = _score(taps["fc7"], head.num_classes)
        _head(n, head, score, taps, ALEXNET_STRIDES[stride], n.data, phase,
              recipe.loss_param(True))
    return n.to_proto()


ARCHITECTURES = {"vgg16": fcn_vgg16, "alexnet": fcn_alexnet}
