"""Shared helpers for the engine tests: nets from prototxt text, random weights, OpenCV runs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from netgen.proto import caffe_pb2
from netgen.schema import parse_prototxt, to_prototxt
from solvers.engine import Net

# The suite runs in parallel workers on few cores: torch's intra-op threads would only
# contend with the other workers (tiny test nets gain nothing from them).
torch.set_num_threads(1)


def net_param(text: str) -> caffe_pb2.NetParameter:
    return parse_prototxt(text, caffe_pb2.NetParameter, "<test net>")


def randomize(net: Net, seed: int = 0) -> None:
    """Random weights everywhere (biases and BatchNorm statistics too, variances positive)."""
    rng = np.random.default_rng(seed)
    for rec in net.layers:
        for i, p in enumerate(rec.params):
            if rec.type == "BatchNorm":
                p.data = rng.uniform(0.5, 2.0, p.shape)
            else:
                fan_in = max(1, int(np.prod(p.shape[1:])))
                p.data = rng.normal(0, 1 / np.sqrt(fan_in), p.shape)


def opencv_net(net: Net, text: str, folder: Path):
    """Write the net's prototxt and weights, and read them back with OpenCV's Caffe importer."""
    proto, model = folder / "net.prototxt", folder / "net.caffemodel"
    proto.write_text(to_prototxt(net_param(text)))
    net.save(model)
    return cv2.dnn.readNetFromCaffe(str(proto), str(model))


def rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    scale = max(float(np.abs(ref).max()), 1e-12)
    return float(np.abs(ours - ref).max()) / scale


def double(text: str, phase: str = "TRAIN", **kw) -> Net:
    """The net in float64, for gradient checks."""
    torch.manual_seed(0)
    return Net(net_param(text), phase, dtype=torch.float64, **kw)
