"""Whether a train net can learn at all, checked before iteration 1 and over the first steps.

The FCN reference recipes define no fillers: their weights come from an ImageNet classifier.
Trained without one, every learnable parameter starts at zero. With zero weights in series
(conv1_1 -> ... -> score_fr) each weight's gradient is (delta from above) x (input from
below), and one of the two is zero for every weight: activations after the first zero layer
are zero (ReLU, pooling, crop and sums keep zero at zero), and deltas do not pass a zero layer
back. Only the last layer's bias moves (to the class prior), the loss stays at ln(C) per pixel,
and a user learns it days later from a background-only mean IU.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2

from .data.labels import warn
from .engine.layers.loss import BATCH_SIZE, FULL, NONE, normalization_mode

OVERRIDE = "--allow-zero-init"  # solve.py's flag; train(allow_zero_init=True)


def _lr_mult(layer: caffe_pb2.LayerParameter, i: int) -> float:
    return layer.param[i].lr_mult if i < len(layer.param) else 1.0


def learnable_blobs(net: Any, definition: caffe_pb2.NetParameter) -> dict[str, list[int]]:
    """layer name -> indices of its parameter blobs with lr_mult != 0 (Caffe's default 1)."""
    out = {}
    for layer in definition.layer:
        if layer.name in net.params:
            idx = [i for i in range(len(net.params[layer.name])) if _lr_mult(layer, i) != 0]
            if idx:
                out[layer.name] = idx
    return out


def _in_series(definition: caffe_pb2.NetParameter, learnable: set[str]) -> bool:
    """True when some learnable layer reads (through any layers) the output of another."""
    downstream: set[str] = set()  # blobs computed from a learnable layer's output
    for layer in definition.layer:
        fed = any(b in downstream for b in layer.bottom)
        if fed and layer.name in learnable:
            return True
        if fed or layer.name in learnable:
            downstream.update(layer.top)
    return False


def check_learnable(net: Any, definition: caffe_pb2.NetParameter, where: str,
                    weights: str | None) -> None:
    """Raise FcnkitError when every learnable parameter of the initialised train net is zero
    and learnable layers sit in series: no weight can ever receive a gradient.

    net: the backend's train net (pycaffe or engine: net.params[name][i].data arrays).
    definition: its NetParameter (lr_mult per param); where: the solver file, for the message;
    weights: the --weights file used, if any (it then left every learnable layer zero).
    """
    learnable = learnable_blobs(net, definition)
    if not learnable or not _in_series(definition, set(learnable)):
        return
    if any(np.any(np.asarray(net.params[name][i].data))
           for name, idx in learnable.items() for i in idx):
        return
    cause = (f"--weights {weights} set none of them (no layer name matched?)" if weights
             else "no --weights, and the net defines no weight fillers")
    raise FcnkitError(
        f"{where}: all {len(learnable)} learnable layers start at zero ({cause}); with zero "
        "weights in series no gradient reaches any weight and the loss stays at ln(classes). "
        "Give --weights with an ImageNet classifier (e.g. VGG_ILSVRC_16_layers.caffemodel) or "
        f"generate the net with netgen --recipe scratch; {OVERRIDE} trains it anyway")


class FlatLossWatch:
    """Warns once when every SoftmaxWithLoss head's loss per counted pixel stays at ln(C)
    (uniform class scores: a net that is not learning) for the first `iters` iterations.

    Per-pixel loss = loss top x normaliser / counted pixels, the normaliser as the layer's
    normalization mode sets it (VALID: counted pixels, FULL: N·H·W, BATCH_SIZE: N, NONE: 1).
    """

    def __init__(self, definition: caffe_pb2.NetParameter, where: str, iters: int = 20,
                 rel_tol: float = 1e-4) -> None:
        self.heads = [layer for layer in definition.layer
                      if layer.type == "SoftmaxWithLoss" and len(layer.bottom) >= 2]
        self.where, self.iters, self.rel_tol = where, iters, rel_tol
        self.flat = 0  # consecutive iterations at ln(C), from the first; -1: done watching

    def _per_pixel(self, net: Any, layer: caffe_pb2.LayerParameter) -> tuple[float, int]:
        score, label = (np.asarray(net.blobs[b].data) for b in layer.bottom[:2])
        lp = layer.loss_param
        counted = (label != lp.ignore_label if lp.HasField("ignore_label")
                   else np.ones_like(label, bool))
        n_counted = int(counted.sum())
        norm = {FULL: label.size, BATCH_SIZE: score.shape[0], NONE: 1}.get(
            normalization_mode(lp), n_counted)
        loss = float(np.sum(net.blobs[layer.top[0]].data))
        return loss * max(1, norm) / max(1, n_counted), score.shape[1]

    def update(self, net: Any) -> None:
        """Call after each training step, from the first."""
        if self.flat < 0 or not self.heads:
            return
        at_ln_c = True
        for layer in self.heads:
            per_pixel, classes = self._per_pixel(net, layer)
            at_ln_c &= math.isclose(per_pixel, math.log(classes), rel_tol=self.rel_tol)
        self.flat = self.flat + 1 if at_ln_c else -1
        if self.flat >= self.iters:
            self.flat = -1
            warn(f"{self.where}: the loss has stayed at ln(classes) per pixel for the first "
                 f"{self.iters} iterations (uniform scores): the net is not learning; check the "
                 "initial weights (--weights) and base_lr")
