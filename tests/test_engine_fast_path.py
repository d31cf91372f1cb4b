"""The engine's fast paths: channels-last convolutions and cached half-precision weights.

Channels-last changes only memory strides, so float32 results must still agree with OpenCV's
independent Caffe importer as tightly as the plain layout does, and float64 gradients must
equal the plain layout's. Under amp the half copy of a weight must be made once per change of
the float32 value (not per pass), follow every way the value changes, and pass float32
gradients back.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import net_param, opencv_net, randomize, rel_error
from solvers.engine import Net
from solvers.engine.half_weights import half_weight
from test_engine_opencv import ALEX, BRANCHES, FUSED, last_writers

TRAIN = ALEX.replace('top: "crop" crop_param { offset: 3 } }', '''top: "crop" crop_param { offset: 3 } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 24 dim: 24 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "crop" bottom: "label" top: "loss" }
''')


@pytest.mark.parametrize("text", [ALEX, BRANCHES], ids=["alex", "branches"])
def test_channels_last_matches_opencv(text, tmp_path):
    torch.manual_seed(0)
    net = Net(net_param(text), "TEST", channels_last=True)
    randomize(net, seed=1)
    writers = {b: layer for b, layer in last_writers(net).items() if layer not in FUSED}
    cvnet = opencv_net(net, text, tmp_path)
    x = np.random.default_rng(2).normal(size=(2, 3, 25, 23)).astype(np.float32)
    net.forward(data=x)
    cvnet.setInput(x)
    refs = dict(zip(writers.values(), cvnet.forward(list(writers.values()))))
    assert any(net.blobs[b].tensor.is_contiguous(memory_format=torch.channels_last)
               and not net.blobs[b].tensor.is_contiguous() for b in writers)
    for blob, layer in writers.items():
        assert rel_error(net.blobs[blob].data, refs[layer]) < 1e-4, (blob, layer)


def _grads(channels_last: bool, amp: str | None = None, dtype=torch.float64):
    torch.manual_seed(0)
    net = Net(net_param(TRAIN), "TRAIN", dtype=dtype, amp=amp, channels_last=channels_last)
    randomize(net, seed=3)
    rng = np.random.default_rng(4)
    net.blobs["data"].data[...] = rng.normal(size=(1, 3, 24, 24))
    net.blobs["label"].data[...] = rng.integers(0, 4, (1, 1, 24, 24))
    loss = net.forward_backward()
    return net, loss, [p.diff.copy() for p in net.learnable_params()]


def test_channels_last_gradients_equal_plain_layout():
    _, loss, plain = _grads(False)
    _, loss_cl, cl = _grads(True)
    assert loss_cl == pytest.approx(loss, rel=1e-12)
    for a, b in zip(cl, plain):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_bf16_gradients_are_float32_and_close():
    _, loss, ref = _grads(False, dtype=torch.float32)
    net, loss_bf, got = _grads(True, amp="bf16", dtype=torch.float32)
    assert loss_bf == pytest.approx(loss, rel=2e-2)
    for p, a, b in zip(net.learnable_params(), got, ref):
        assert p.tensor.grad.dtype == torch.float32
        assert rel_error(a, b) < 0.05


def test_half_copy_made_once_per_change_and_shared():
    torch.manual_seed(0)
    net = Net(net_param(ALEX), "TEST", amp="bf16")
    other = Net(net_param(ALEX), "TEST", amp="bf16")
    other.share_weights(net)
    randomize(net)
    p, shape = net.layers[1].params[0], net.layers[1].param_shapes[0]

    def current() -> torch.Tensor:
        with torch.no_grad():
            return half_weight(p, shape, torch.bfloat16, True)

    copy = current()
    assert copy.dtype == torch.bfloat16 and copy.is_contiguous(memory_format=torch.channels_last)
    x = np.random.default_rng(0).normal(size=(1, 3, 24, 24)).astype(np.float32)
    net.forward(data=x)
    other.forward(data=x)
    assert current() is copy  # no re-cast by either pass

    def changed() -> torch.Tensor:
        nonlocal copy
        new = current()
        assert new is not copy
        copy = new
        return new

    with torch.no_grad():
        p.tensor.detach().sub_(1.0)   # what the solver's update does
    assert torch.equal(changed(), p.tensor.detach().bfloat16())
    net.copy_from(net.to_weights())
    changed()
    p.data[...] = 2.0                 # pycaffe-style write through the numpy view
    assert torch.equal(changed(), torch.full(shape, 2.0, dtype=torch.bfloat16))


def test_predictor_amp_runs_bf16_near_float32(tmp_path):
    """infer.py --amp: the Predictor's engine net runs under bf16 with scores near float32's;
    other backends refuse it."""
    from netgen.errors import FcnkitError
    from solvers.predict import Predictor

    torch.manual_seed(0)
    net = Net(net_param(ALEX), "TEST")
    randomize(net, seed=5)
    opencv_net(net, ALEX, tmp_path)  # writes net.prototxt and net.caffemodel
    deploy, weights = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    x = np.random.default_rng(6).normal(size=(3, 24, 24)).astype(np.float32)
    ref = Predictor(deploy, weights, output="crop").scores(x)
    fast = Predictor(deploy, weights, output="crop", amp="bf16").scores(x)
    assert fast.dtype == np.float32 and not np.array_equal(fast, ref)
    assert rel_error(fast, ref) < 5e-2
    with pytest.raises(FcnkitError, match="torch backend only"):
        Predictor(deploy, weights, "opencv", output="crop", amp="bf16")
