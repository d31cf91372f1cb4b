"""Layers that reduce or normalise over trailing axes: Reduction, MVN."""
from __future__ import annotations

import torch

from .base import Layer, register

# ReductionParameter.ReductionOp -> per-value term; MEAN also divides by the count
SUM, ASUM, SUMSQ, MEAN = 1, 2, 3, 4
_TERMS = {SUM: lambda x: x, ASUM: torch.abs, SUMSQ: torch.square, MEAN: lambda x: x}


@register
class Reduction(Layer):
    """coeff * (SUM | ASUM | SUMSQ | MEAN) over `axis` and every axis after it; the top keeps
    the leading axes (a scalar for axis 0)."""
    type = "Reduction"
    fields = {"reduction_param": frozenset({"operation", "axis", "coeff"})}

    def forward(self, bottoms, params, run):
        p = self.lp.reduction_param
        x = bottoms[0]
        axis = self.axis(p.axis, x.dim())
        flat = _TERMS[p.operation](x.reshape(tuple(x.shape[:axis]) + (-1,)))
        coeff = p.coeff / flat.shape[-1] if p.operation == MEAN and flat.shape[-1] else p.coeff
        y = flat.sum(dim=-1)
        return [y * coeff if coeff != 1 else y]


class _MVNScale(torch.autograd.Function):
    """y = d / (std + eps) for centred d, with Caffe's backward (d mean-free over each row):
    dx = (dy - mean(dy) - y * mean(y * dy)) / (std + eps), which drops eps's share."""

    @staticmethod
    def forward(ctx, d, eps: float):
        std = d.square().mean(dim=1, keepdim=True).sqrt() + eps
        y = d / std
        ctx.save_for_backward(y, std)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, std = ctx.saved_tensors
        dx = dy - dy.mean(dim=1, keepdim=True) - y * (y * dy).mean(dim=1, keepdim=True)
        return dx / std, None


@register
class MVN(Layer):
    """Mean-variance normalisation per (item, channel), or per item with across_channels:
    x - mean, then divided by (std + eps) with normalize_variance (std of the population)."""
    type = "MVN"
    fields = {"mvn_param": frozenset({"normalize_variance", "across_channels", "eps"})}

    def forward(self, bottoms, params, run):
        p = self.lp.mvn_param
        x = bottoms[0]
        if not 1 <= x.dim() <= 4:   # Caffe reads num and channels as legacy 4-D dims
            raise self.error(f"bottom shape {tuple(x.shape)}: MVN takes 1 to 4 axes")
        channels = x.shape[1] if x.dim() > 1 else 1
        rows = x.shape[0] if p.across_channels else x.shape[0] * channels
        flat = x.reshape(rows, -1)
        d = flat - flat.mean(dim=1, keepdim=True)
        y = _MVNScale.apply(d, p.eps) if p.normalize_variance else d
        return [y.reshape(x.shape)]
