"""The engine's shape pass: blobs shaped by netgen.shapes' rules agree with the layers' own
meta-device forward, and building or reshaping a deploy FCN runs no torch meta kernel (those
import torch._dynamo and sympy, over a second on a fresh process's first net)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import solvers.engine.net as engine_net
from netgen.presets import resolve
from netgen.writer import Options, build_net
from solvers.engine import Net

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = Options(width=1 / 32, data="input")


def shapes(net: Net) -> dict:
    return {name: (blob.shape, blob.tensor.dtype) for name, blob in net.blobs.items()}


@pytest.mark.parametrize("name,phase", [("voc-fcn8s", "deploy"), ("voc-fcn8s", "train"),
                                        ("voc-fcn32s", "val"), ("nyud-fcn32s-color-hha", "deploy")])
def test_rule_shapes_match_meta_forward(name, phase, monkeypatch):
    param = build_net(resolve(name), phase, OPTIONS)
    state = "TRAIN" if phase == "train" else "TEST"
    fast = Net(param, state)
    monkeypatch.setattr(engine_net, "RULE_SHAPED", frozenset())
    slow = Net(param, state)
    assert shapes(fast) == shapes(slow)
    for net in (fast, slow):   # an odd size after construction: Net.reshape takes the same path
        for i in net.inputs:
            net.blobs[i].reshape(1, net.blobs[i].shape[1], 37, 45)
        net.reshape()
    assert shapes(fast) == shapes(slow)
    assert fast.blobs["score"].shape[2:] == (37, 45)


def test_rule_shaped_layers_exist_in_both():
    from netgen.shapes import RULES
    from solvers.engine.layers import LAYERS
    assert engine_net.RULE_SHAPED <= set(RULES) & set(LAYERS)


def test_building_a_deploy_net_runs_no_meta_kernels():
    code = ("import sys, numpy as np; from netgen.presets import resolve;"
            "from netgen.writer import Options, build_net; from solvers.engine import Net;"
            "net = Net(build_net(resolve('voc-fcn8s'), 'deploy', Options(width=1 / 32)), 'TEST');"
            "net.blobs['data'].reshape(1, 3, 40, 30); net.reshape();"
            "net.forward(data=np.zeros((1, 3, 33, 35), np.float32));"
            "print(net.blobs['score'].shape, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-1] == "False", out
    assert "".join(out[:-1]) == "(1,21,33,35)"


def test_a_rejected_rule_leaves_the_layer_to_decide():
    # Caffe takes pad_h alone (pad_w stays 0); netgen's rule wants both, the engine runs it
    from engine_helpers import net_param
    net = Net(net_param(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 6 } } }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { '
        'num_output: 3 kernel_size: 3 pad_h: 1 } }'), "TEST")
    assert net.blobs["c"].shape == (1, 3, 5, 4)
    out = net.forward(data=np.ones((1, 2, 7, 8), np.float32))["c"]
    assert out.shape == (1, 3, 7, 6)
