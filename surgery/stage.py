"""Initialise the next FCN stage from the previous one: FCN-32s -> FCN-16s -> FCN-8s.

As in the staged training of the reference: layers the stages share (the trunk, fc6/fc7,
score_fr, and score_pool4 going 16s -> 8s) are copied; new scoring convolutions (the skips
score_pool4, score_pool3) start at zero, so at first the skips add nothing and the finer net
predicts from score_fr alone, as the coarser one did; other new parameters get their
prototxt fillers; every upsampling
Deconvolution is set to bilinear interpolation (also the ones copied, as the reference's
interp after copy_from does).
"""
from __future__ import annotations

import numpy as np

from netgen.proto import caffe_pb2

from .caffemodel import Weights
from .interp import interp
from netgen.legacy import upgrade_net
from .transplant import Entry, Report, transplant


def stage_init(source: Weights, target_net: caffe_pb2.NetParameter, *, seed: int = 0,
               input_channels: int | dict[str, int] = 3,
               input_size: tuple[int, int] | None = None) -> tuple[Weights, Report]:
    """Weights for `target_net` (the next stage) from the trained `source` stage, + report."""
    net = upgrade_net(target_net)
    weights, report = transplant(net, source, seed=seed, input_channels=input_channels,
                                 input_size=input_size)
    upsamplers = set(interp(weights, net))
    entries = []
    for entry in report:
        if entry.action == "dropped":
            entries.append(entry)
        elif entry.layer in upsamplers and entry.index == 0:
            entries.append(Entry(entry.action, entry.layer, entry.index, entry.shape,
                                 entry.source, entry.from_shape, "set to bilinear"))
        elif entry.action == "init" and weights.types[entry.layer] == "Convolution":
            weights[entry.layer][entry.index] = np.zeros(entry.shape, dtype=np.float32)
            entries.append(Entry("init", entry.layer, entry.index, entry.shape,
                                 note="zero (new scoring layer)"))
        else:
            entries.append(entry)
    return weights, Report(entries)
