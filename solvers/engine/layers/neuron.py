"""Elementwise activations: ReLU (leaky), Sigmoid, TanH, Dropout, AbsVal, BNLL, Power, Exp,
Log, ELU, PReLU, Threshold, Clip, Swish."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import ENGINE, Layer, ParamInit, register


@register
class ReLU(Layer):
    """max(x, 0) + negative_slope * min(x, 0); overwrites its bottom when marked in_place."""
    type = "ReLU"
    fields = {"relu_param": frozenset({"negative_slope", ENGINE})}

    def forward(self, bottoms, params, run):
        slope = self.lp.relu_param.negative_slope
        x = bottoms[0]
        if self.in_place and run.overwrite:   # as Caffe: the bottom's memory is reused
            return [F.leaky_relu_(x, slope) if slope else F.relu_(x)]
        return [F.leaky_relu(x, slope) if slope else F.relu(x)]


@register
class Sigmoid(Layer):
    type = "Sigmoid"
    fields = {"sigmoid_param": frozenset({ENGINE})}

    def forward(self, bottoms, params, run):
        return [torch.sigmoid(bottoms[0])]


@register
class TanH(Layer):
    type = "TanH"
    fields = {"tanh_param": frozenset({ENGINE})}

    def forward(self, bottoms, params, run):
        return [torch.tanh(bottoms[0])]


@register
class Dropout(Layer):
    """Training keeps each unit with probability 1-p and scales kept units by 1/(1-p);
    testing is the identity."""
    type = "Dropout"
    fields = {"dropout_param": frozenset({"dropout_ratio"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        self.ratio = lp.dropout_param.dropout_ratio
        if not 0 <= self.ratio < 1:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        if not run.train or run.meta or self.ratio == 0:
            return [x]
        keep = torch.bernoulli(torch.full_like(x, 1.0 - self.ratio))
        return [x * keep * (1.0 / (1.0 - self.ratio))]


@register
class AbsVal(Layer):
    """|x|; the gradient is sign(x) (0 at 0, as Caffe's caffe_sign)."""
    type = "AbsVal"

    def forward(self, bottoms, params, run):
        return [torch.abs(bottoms[0])]


@register
class BNLL(Layer):
    """Binomial normal log likelihood log(1 + e^x), computed without overflow."""
    type = "BNLL"

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        return [torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))]


@register
class Power(Layer):
    """(shift + scale * x) ^ power. With power * scale = 0 the top is the constant
    (power == 0 ? 1 : shift ^ power) and no gradient flows, as in Caffe."""
    type = "Power"
    fields = {"power_param": frozenset({"power", "scale", "shift"})}

    def forward(self, bottoms, params, run):
        p = self.lp.power_param
        x = bottoms[0]
        if p.power * p.scale == 0:   # pow(0, 0) = 1 covers power 0; nan/inf as C's pow
            return [torch.full_like(x, p.shift).pow(p.power)]
        u = x * p.scale if p.scale != 1 else x
        u = u + p.shift if p.shift != 0 else u
        return [u ** p.power if p.power != 1 else u]


def _log_base(layer: Layer, base: float) -> float:
    """ln(base), with Caffe's convention that base -1 means e; other bases must be positive."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise layer.error(f"base must be positive (or -1 for e), got {base:g}")
    return math.log(base)


@register
class Exp(Layer):
    """base ^ (shift + scale * x), evaluated as Caffe does: base^shift * exp(ln(base) * scale * x)."""
    type = "Exp"
    fields = {"exp_param": frozenset({"base", "scale", "shift"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.exp_param
        log_base = _log_base(self, p.base)
        self.inner = log_base * p.scale
        self.outer = 1.0 if p.shift == 0 else math.exp(log_base * p.shift)

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        y = torch.exp(x * self.inner if self.inner != 1 else x)
        return [y * self.outer if self.outer != 1 else y]


@register
class Log(Layer):
    """log_base(shift + scale * x); base -1 means e, base 1 is rejected (as Caffe)."""
    type = "Log"
    fields = {"log_param": frozenset({"base", "scale", "shift"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.log_param
        log_base = _log_base(self, p.base)
        if log_base == 0:
            raise self.error("base 1 has no logarithm")
        self.base_scale = 1.0 / log_base

    def forward(self, bottoms, params, run):
        p = self.lp.log_param
        x = bottoms[0]
        u = x * p.scale if p.scale != 1 else x
        u = u + p.shift if p.shift != 0 else u
        y = torch.log(u)
        return [y * self.base_scale if self.base_scale != 1 else y]


@register
class ELU(Layer):
    """x for x > 0, alpha (e^x - 1) otherwise."""
    type = "ELU"
    fields = {"elu_param": frozenset({"alpha"})}

    def forward(self, bottoms, params, run):
        return [F.elu(bottoms[0], alpha=self.lp.elu_param.alpha)]


@register
class PReLU(Layer):
    """max(x, 0) + a_c min(x, 0) with learned slopes a: one per channel (axis 1), or one
    scalar with channel_shared. Slopes start at the filler, 0.25 by default."""
    type = "PReLU"
    fields = {"prelu_param": frozenset({"filler", "channel_shared"})}

    def param_inits(self, shapes):
        if len(shapes[0]) < 2:
            raise self.error(f"bottom needs at least 2 axes, got shape {tuple(shapes[0])}")
        p = self.lp.prelu_param
        shape = () if p.channel_shared else (shapes[0][1],)
        return [ParamInit(shape, p.filler if p.HasField("filler") else None, 0.25)]

    def forward(self, bottoms, params, run):
        x, slope = bottoms[0], params[0]
        if slope.dim():
            if x.dim() < 2 or x.shape[1] != slope.shape[0]:
                raise self.error(f"bottom shape {tuple(x.shape)} does not have the "
                                 f"{slope.shape[0]} channels of the slopes")
            slope = slope.reshape((1, -1) + (1,) * (x.dim() - 2))
        return [torch.where(x > 0, x, x * slope)]


@register
class Threshold(Layer):
    """1 where x > threshold, else 0. Caffe has no backward for it; here no gradient flows."""
    type = "Threshold"
    fields = {"threshold_param": frozenset({"threshold"})}

    def forward(self, bottoms, params, run):
        x = bottoms[0].detach()
        return [(x > self.lp.threshold_param.threshold).to(x.dtype)]


@register
class Clip(Layer):
    """max(min, min(x, max)); the gradient passes where min <= x <= max."""
    type = "Clip"
    fields = {"clip_param": frozenset({"min", "max"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.clip_param
        if not (lp.HasField("clip_param") and p.HasField("min") and p.HasField("max")):
            raise self.error("clip_param.min and clip_param.max are required")

    def forward(self, bottoms, params, run):
        p = self.lp.clip_param
        return [torch.clamp_min(torch.clamp_max(bottoms[0], p.max), p.min)]


@register
class Swish(Layer):
    """x * sigmoid(beta x)."""
    type = "Swish"
    fields = {"swish_param": frozenset({"beta"})}

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        beta = self.lp.swish_param.beta
        return [x * torch.sigmoid(x * beta if beta != 1 else x)]
