"""Finite-difference checks of the engine's backward pass, layer type by layer type.

Each case is a small float64 net ending in top "out", followed by an EuclideanLoss against a
random target, so the objective is a non-linear function of every parameter and input. The
gradients forward_backward() leaves in the params (and, with retain_blob_diffs, in the data
blob) must equal central differences of the objective at sampled coordinates.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import double, net_param, randomize
from solvers.engine import Net

DATA = (2, 4, 7, 6)


def _input(name: str, shape) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


CASES = {
    "conv": '''layer { name: "c" type: "Convolution" bottom: "data" top: "out"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2 } }''',
    "conv_dilated_rect": '''layer { name: "c" type: "Convolution" bottom: "data" top: "out"
        convolution_param { num_output: 3 kernel_h: 2 kernel_w: 3 dilation: 2 pad_w: 1 bias_term: false } }''',
    "deconv": '''layer { name: "d" type: "Deconvolution" bottom: "data" top: "out"
        convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2 } }''',
    "deconv_dilated": '''layer { name: "d" type: "Deconvolution" bottom: "data" top: "out"
        convolution_param { num_output: 2 kernel_size: 3 stride: 3 dilation: 2 } }''',
    "inner_product": '''layer { name: "ip" type: "InnerProduct" bottom: "data" top: "out"
        inner_product_param { num_output: 5 } }''',
    "inner_product_axis_transpose": '''layer { name: "ip" type: "InnerProduct" bottom: "data" top: "out"
        inner_product_param { num_output: 3 axis: 2 transpose: true } }''',
    "scale_bias_term": '''layer { name: "s" type: "Scale" bottom: "data" top: "out"
        scale_param { bias_term: true num_axes: 2 } }''',
    "scale_two_bottoms": '''layer { name: "g" type: "Convolution" bottom: "data" top: "g"
        convolution_param { num_output: 4 kernel_h: 7 kernel_w: 6 } }''',
    "bias": '''layer { name: "b" type: "Bias" bottom: "data" top: "out" bias_param { axis: 1 num_axes: -1 } }''',
    "batchnorm_train": '''layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
        layer { name: "s" type: "Scale" bottom: "bn" top: "out" scale_param { bias_term: true } }''',
    "batchnorm_global": '''layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn"
        batch_norm_param { use_global_stats: true } }
        layer { name: "c" type: "Convolution" bottom: "bn" top: "out" convolution_param { num_output: 2 kernel_size: 1 } }''',
    "lrn_across": '''layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 3 alpha: 0.7 beta: 0.75 k: 1.5 } }
        layer { name: "c" type: "Convolution" bottom: "n" top: "out" convolution_param { num_output: 2 kernel_size: 1 } }''',
    "lrn_within": '''layer { name: "n" type: "LRN" bottom: "data" top: "n"
        lrn_param { local_size: 3 alpha: 0.7 beta: 0.75 norm_region: WITHIN_CHANNEL } }
        layer { name: "c" type: "Convolution" bottom: "n" top: "out" convolution_param { num_output: 2 kernel_size: 1 } }''',
    "pool_max_ceil": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 1 } }
        layer { name: "p" type: "Pooling" bottom: "c" top: "out" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }''',
    "pool_ave_padded": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 1 } }
        layer { name: "p" type: "Pooling" bottom: "c" top: "out" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }''',
    # pad above half the kernel: the padded-copy path rather than torch's own padding
    "pool_explicit_pad": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 1 } }
        layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 2 } }
        layer { name: "q" type: "Pooling" bottom: "c" top: "q" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 2 } }
        layer { name: "out" type: "Eltwise" bottom: "p" bottom: "q" top: "out" eltwise_param { operation: PROD } }''',
    "eltwise": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "c" top: "sum" eltwise_param { coeff: 0.5 coeff: -1.5 } }
        layer { name: "prod" type: "Eltwise" bottom: "sum" bottom: "c" top: "prod" eltwise_param { operation: PROD } }
        layer { name: "max" type: "Eltwise" bottom: "prod" bottom: "data" bottom: "c" top: "out" eltwise_param { operation: MAX } }''',
    "concat_crop_split": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 3 } }
        layer { name: "k" type: "Crop" bottom: "data" bottom: "c" top: "k" crop_param { axis: 2 offset: 1 offset: 0 } }
        layer { name: "cat" type: "Concat" bottom: "k" bottom: "c" top: "cat" }
        layer { name: "sp" type: "Split" bottom: "cat" top: "s1" top: "s2" }
        layer { name: "out" type: "Eltwise" bottom: "s1" bottom: "s2" top: "out" eltwise_param { operation: PROD } }''',
    "activations": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "r" type: "ReLU" bottom: "c" top: "r" relu_param { negative_slope: 0.2 } }
        layer { name: "s" type: "Sigmoid" bottom: "r" top: "s" }
        layer { name: "t" type: "TanH" bottom: "c" top: "t" }
        layer { name: "m" type: "Softmax" bottom: "t" top: "m" }
        layer { name: "out" type: "Eltwise" bottom: "s" bottom: "m" top: "out" }''',
    "flatten_reshape": '''layer { name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 2 } }
        layer { name: "r" type: "Reshape" bottom: "f" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 7 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "r" top: "out" inner_product_param { num_output: 3 } }''',
    "shared_params": '''layer { name: "a" type: "Convolution" bottom: "data" top: "a"
            param { name: "w" } param { name: "b" } convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "r" type: "TanH" bottom: "a" top: "r" }
        layer { name: "b" type: "Convolution" bottom: "r" top: "out"
            param { name: "w" } param { name: "b" } convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }''',
    "elementwise": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "a" type: "AbsVal" bottom: "c" top: "a" }
        layer { name: "p" type: "Power" bottom: "a" top: "p" power_param { power: 1.5 scale: 0.5 shift: 0.25 } }
        layer { name: "l" type: "Log" bottom: "p" top: "l" log_param { base: 3 scale: 2 shift: 0.5 } }
        layer { name: "b" type: "BNLL" bottom: "c" top: "b" }
        layer { name: "e" type: "Exp" bottom: "b" top: "e" exp_param { base: 2 scale: -0.5 shift: 0.5 } }
        layer { name: "u" type: "ELU" bottom: "c" top: "u" elu_param { alpha: 0.7 } }
        layer { name: "s" type: "Swish" bottom: "c" top: "s" swish_param { beta: 1.5 } }
        layer { name: "k" type: "Clip" bottom: "s" top: "k" clip_param { min: -0.2 max: 0.6 } }
        layer { name: "t" type: "Threshold" bottom: "c" top: "t" threshold_param { threshold: 0.1 } }
        layer { name: "out" type: "Eltwise" bottom: "l" bottom: "e" bottom: "u" bottom: "k" bottom: "t" top: "out" }''',
    "prelu": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 1 } }
        layer { name: "p" type: "PReLU" bottom: "c" top: "p" }
        layer { name: "q" type: "PReLU" bottom: "data" top: "q" prelu_param { channel_shared: true } }
        layer { name: "qc" type: "Convolution" bottom: "q" top: "qc" convolution_param { num_output: 3 kernel_size: 1 } }
        layer { name: "out" type: "Eltwise" bottom: "p" bottom: "qc" top: "out" eltwise_param { operation: PROD } }''',
    "slice_tile": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "s" type: "Slice" bottom: "c" top: "s1" top: "s2" top: "s3" slice_param { axis: 2 slice_point: 2 slice_point: 3 } }
        layer { name: "h" type: "Slice" bottom: "c" top: "h1" top: "h2" slice_param { slice_dim: 1 } }
        layer { name: "t" type: "Tile" bottom: "s2" top: "t" tile_param { axis: 2 tiles: 2 } }
        layer { name: "m" type: "Eltwise" bottom: "t" bottom: "s1" top: "m" eltwise_param { operation: PROD } }
        layer { name: "ht" type: "Tile" bottom: "h2" top: "ht" tile_param { axis: -1 tiles: 2 } }
        layer { name: "hr" type: "Reshape" bottom: "ht" top: "hr" reshape_param { shape { dim: 0 dim: 4 dim: 7 dim: -1 } } }
        layer { name: "hs" type: "Slice" bottom: "hr" top: "hs1" top: "hs2" slice_param { axis: 2 slice_point: 6 } }
        layer { name: "cat" type: "Concat" bottom: "m" bottom: "s3" top: "cat" concat_param { axis: 2 } }
        layer { name: "silence" type: "Silence" bottom: "h1" bottom: "hs2" }
        layer { name: "out" type: "Eltwise" bottom: "cat" bottom: "hs1" top: "out" }''',
    "reduction": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "r1" type: "Reduction" bottom: "c" top: "r1" reduction_param { axis: 2 coeff: 0.5 } }
        layer { name: "r2" type: "Reduction" bottom: "c" top: "r2" reduction_param { operation: ASUM axis: -2 } }
        layer { name: "r3" type: "Reduction" bottom: "c" top: "r3" reduction_param { operation: SUMSQ axis: 2 coeff: -0.25 } }
        layer { name: "r4" type: "Reduction" bottom: "c" top: "r4" reduction_param { operation: MEAN axis: 2 coeff: 3 } }
        layer { name: "p" type: "Eltwise" bottom: "r1" bottom: "r2" top: "p" eltwise_param { operation: PROD } }
        layer { name: "out" type: "Eltwise" bottom: "p" bottom: "r3" bottom: "r4" top: "out" }''',
    "mvn": '''layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "m1" type: "MVN" bottom: "c" top: "m1" }
        layer { name: "m2" type: "MVN" bottom: "c" top: "m2" mvn_param { across_channels: true } }
        layer { name: "m3" type: "MVN" bottom: "c" top: "m3" mvn_param { normalize_variance: false } }
        layer { name: "p" type: "Eltwise" bottom: "m1" bottom: "m3" top: "p" eltwise_param { operation: PROD } }
        layer { name: "out" type: "Eltwise" bottom: "p" bottom: "m2" top: "out" eltwise_param { operation: PROD } }''',
}
# the two-bottom Scale multiplies by a computed blob (g: N x 4)
CASES["scale_two_bottoms"] += '''
        layer { name: "gr" type: "Reshape" bottom: "g" top: "gr" reshape_param { shape { dim: 0 dim: -1 } } }
        layer { name: "s" type: "Scale" bottom: "data" bottom: "gr" top: "out" scale_param { axis: 0 bias_term: true } }'''


def build(body: str) -> tuple[Net, str]:
    """The case's net with an EuclideanLoss on `out` against an input `target`."""
    probe = Net(net_param(_input("data", DATA) + body), "TRAIN")
    text = (_input("data", DATA) + _input("target", probe.blobs["out"].shape) + body +
            '\nlayer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "target" top: "loss" }')
    net = double(text)
    randomize(net, seed=7)
    return net, text


def objective(net: Net) -> float:
    net.forward()
    return sum(w * float(net.blobs[t].data.sum()) for rec in net.layers
               for t, w in zip(rec.tops, rec.loss_weights) if w)


def central_difference(net: Net, array: np.ndarray, index, eps: float = 1e-6) -> float:
    keep = array[index]
    array[index] = keep + eps
    up = objective(net)
    array[index] = keep - eps
    down = objective(net)
    array[index] = keep
    return (up - down) / (2 * eps)


def sample(shape, rng, n: int = 6):
    return [tuple(int(rng.integers(d)) for d in shape) for _ in range(n)]


def check(net: Net, rng) -> int:
    """Compare analytic gradients with central differences; returns how many were checked."""
    net.retain_blob_diffs = True
    net.clear_param_diffs()
    net.forward_backward()
    analytic = [p.diff.copy() for p in net.learnable_params()]
    data_grad = net.blobs["data"].diff.copy()
    checked = 0
    for p, grad in zip(net.learnable_params(), analytic):
        if p.lr_mult == 0:
            assert not grad.any()
            continue
        for idx in sample(p.shape, rng):
            numeric = central_difference(net, p.data, idx)
            assert grad[idx] == pytest.approx(numeric, rel=1e-5, abs=1e-7), (p, idx)
            checked += 1
    for idx in sample(DATA, rng):
        numeric = central_difference(net, net.blobs["data"].data, idx)
        assert data_grad[idx] == pytest.approx(numeric, rel=1e-5, abs=1e-7), ("data", idx)
        checked += 1
    return checked


@pytest.mark.parametrize("case", CASES)
def test_gradients_match_central_differences(case):
    net, _ = build(CASES[case])
    rng = np.random.default_rng(11)
    net.blobs["data"].data[...] = rng.normal(size=DATA)
    net.blobs["target"].data[...] = rng.normal(size=net.blobs["target"].shape)
    assert check(net, rng) >= 6


def test_shared_params_are_one_blob_with_summed_gradients():
    net, _ = build(CASES["shared_params"])
    assert net.params["a"][0] is net.params["b"][0]
    assert len(net.learnable_params()) == 2


@pytest.mark.parametrize("normalization", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_softmax_loss_gradient_matches_central_differences(normalization):
    text = (_input("data", DATA) + _input("label", (2, 1, 7, 6)) + f'''
        layer {{ name: "c" type: "Convolution" bottom: "data" top: "score" convolution_param {{ num_output: 3 kernel_size: 3 pad: 1 }} }}
        layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
          loss_weight: 2.5 loss_param {{ ignore_label: 255 normalization: {normalization} }} }}''')
    net = double(text)
    randomize(net, seed=3)
    rng = np.random.default_rng(5)
    label = rng.integers(0, 3, size=(2, 1, 7, 6)).astype(float)
    label[rng.random(label.shape) < 0.3] = 255
    net.blobs["data"].data[...] = rng.normal(size=DATA)
    net.blobs["label"].data[...] = label
    assert check(net, rng) >= 6


@pytest.mark.parametrize("normalization", ["", "normalization: FULL", "normalization: VALID",
                                           "normalization: NONE", "normalize: true"])
def test_sigmoid_cross_entropy_gradient_matches_central_differences(normalization):
    text = (_input("data", DATA) + _input("target", DATA) + f'''
        layer {{ name: "c" type: "Convolution" bottom: "data" top: "score" convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 }} }}
        layer {{ name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "score" bottom: "target" top: "loss"
          loss_weight: 1.5 loss_param {{ ignore_label: -1 {normalization} }} }}''')
    net = double(text)
    randomize(net, seed=3)
    rng = np.random.default_rng(5)
    target = rng.random(DATA)                     # soft targets in [0, 1) truncate to 0
    target[rng.random(DATA) < 0.3] = -1           # ignored
    net.blobs["data"].data[...] = rng.normal(size=DATA)
    net.blobs["target"].data[...] = target
    assert check(net, rng) >= 6


def device_parity(case: str, device: str) -> None:
    """The case's net on `device` gives the CPU's objective and gradients (float64, same
    weights and inputs): catches tensors made on the wrong device and host-only code paths."""
    cpu, text = build(CASES[case])
    other = double(text, device=device)
    rng = np.random.default_rng(13)
    for name in ("data", "target"):
        value = rng.normal(size=cpu.blobs[name].shape)
        cpu.blobs[name].data[...] = value
        other.blobs[name].data[...] = value
    for a, b in zip(cpu.learnable_params(), other.learnable_params()):
        b.data = a.data
    for net in (cpu, other):
        net.retain_blob_diffs = True
    assert other.forward_backward() == pytest.approx(cpu.forward_backward(), rel=1e-9)
    np.testing.assert_allclose(other.blobs["data"].diff, cpu.blobs["data"].diff, rtol=1e-8, atol=1e-12)
    for a, b in zip(cpu.learnable_params(), other.learnable_params()):
        np.testing.assert_allclose(b.diff, a.diff, rtol=1e-8, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES)
def test_cuda_gradients_match_cpu(case):
    device_parity(case, "cuda")
