"""Elementwise activations: ReLU (leaky), Sigmoid, TanH, Dropout."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ENGINE, Layer, register


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
