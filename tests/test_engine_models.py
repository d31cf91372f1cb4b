"""Every FCN deploy net netgen generates (models/), width-scaled, run by the engine and by OpenCV.

The nets come from the same builder and presets that write models/ (width 1/32; single-head
datasets with many classes are given 8 so the 64x64 upsampling filters stay small — the
layer graph is unchanged). Random weights, odd input sizes: every output must agree with
OpenCV's Caffe importer. Where models/<name>/deploy.prototxt exists, it must have exactly
the layer graph of the net tested.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine_helpers import opencv_net, randomize, rel_error
from netgen.presets import DEFAULT_SET, resolve
from netgen.schema import read_net, to_prototxt
from netgen.writer import Options, build_net
from solvers.engine import Net

MODELS = Path(__file__).resolve().parent.parent / "models"
WIDTH = 1 / 32
MAX_CLASSES = 8


def scaled_options(name: str) -> Options:
    model = resolve(name)
    heads = model.heads()
    classes = None if len(heads) > 1 or heads[0].num_classes <= MAX_CLASSES else MAX_CLASSES
    return Options(num_classes=classes, width=WIDTH)


def graph(net) -> list[tuple]:
    return [(l.name, l.type, tuple(l.bottom), tuple(l.top)) for l in net.layer]


@pytest.mark.parametrize("name", DEFAULT_SET)
def test_deploy_net_matches_opencv(name, tmp_path):
    param = build_net(resolve(name), "deploy", scaled_options(name))
    published = MODELS / name / "deploy.prototxt"
    if published.exists():
        assert graph(read_net(published)) == graph(param)
    torch.manual_seed(0)
    net = Net(param, "TEST")
    randomize(net, seed=1)
    cvnet = opencv_net(net, to_prototxt(param), tmp_path)
    rng = np.random.default_rng(2)
    for hw in [(37, 45), (64, 51)]:
        feeds = {i: rng.normal(scale=50, size=(1, net.blobs[i].shape[1]) + hw).astype(np.float32)
                 for i in net.inputs}
        out = net.forward(**feeds)
        for blob, x in feeds.items():
            cvnet.setInput(x, blob)
        for blob, ref in zip(net.outputs, cvnet.forward(net.outputs)):
            assert out[blob].shape == ref.shape == (1, ref.shape[1]) + hw, (name, blob)
            assert rel_error(out[blob], ref) < 1e-4, (name, blob, hw)
