"""Engine forward passes against OpenCV's independent Caffe importer (cv2.dnn.readNetFromCaffe).

Each net gets random weights (biases and BatchNorm statistics included), is saved as a real
caffemodel, read by OpenCV and run at several input sizes, odd ones included so that
Caffe's ceil-mode pooling and its pad clip rule are exercised. Every blob OpenCV can report
must agree to a relative error below 1e-4.
Known OpenCV gaps, checked against numpy elsewhere instead: LRN's `k` (OpenCV ignores it),
deconvolution dilation, Bias and ArgMax layers (not implemented there); Log's base/scale/shift
and Swish's beta (ignored there); MVN's eps (OpenCV adds it under the square root, Caffe after
it); Slice without slice_point and channel-shared PReLU (OpenCV fails to load them); Threshold,
Clip, Tile and Reduction (no Caffe import there).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import net_param, opencv_net, randomize, rel_error
from solvers.engine import Net

INPUT = 'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'


def with_input(body: str, shape=(1, 3, 24, 24)) -> str:
    return INPUT.format(dims=" ".join(f"dim: {d}" for d in shape)) + body


# AlexNet-like: strided conv, LRN (k = 1: OpenCV ignores k), ceil-mode MAX pooling, grouped
# conv, leaky ReLU, WITHIN_CHANNEL LRN, padded AVE pooling, grouped deconvolution, crop.
ALEX = with_input('''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 5 stride: 2 pad: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" relu_param { negative_slope: 0.1 } }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2"
  lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 norm_region: WITHIN_CHANNEL } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "score" type: "Convolution" bottom: "pool2" top: "score"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "score" top: "up"
  convolution_param { num_output: 4 kernel_size: 16 stride: 8 group: 4 bias_term: false } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { offset: 3 } }
''')

# Branches and merges: rectangular/dilated conv, BatchNorm + Scale (with bias), Eltwise
# SUM with coefficients, PROD and MAX, Concat, Sigmoid, TanH, Softmax, asymmetric padded
# MAX pooling, global AVE pooling, padded deconvolution.
BRANCHES = with_input('''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 1 stride_w: 2
                      dilation: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" batch_norm_param { use_global_stats: true } }
layer { name: "sc1" type: "Scale" bottom: "bn1" top: "sc1" scale_param { bias_term: true } }
layer { name: "conv2" type: "Convolution" bottom: "sc1" top: "conv2" convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "sc1" bottom: "conv2" top: "sum"
  eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }
layer { name: "prod" type: "Eltwise" bottom: "sc1" bottom: "conv2" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "prod" bottom: "conv2" top: "max"
  eltwise_param { operation: MAX } }
layer { name: "cat" type: "Concat" bottom: "max" bottom: "sum" top: "cat" }
layer { name: "sig" type: "Sigmoid" bottom: "cat" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "cat" top: "tanh" }
layer { name: "prob" type: "Softmax" bottom: "tanh" top: "prob" }
layer { name: "pool" type: "Pooling" bottom: "sig" top: "pool"
  pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1 } }
layer { name: "gp" type: "Pooling" bottom: "prob" top: "gp" pooling_param { pool: AVE global_pooling: true } }
layer { name: "dc" type: "Deconvolution" bottom: "pool" top: "dc"
  convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 } }
''')

# Fixed-size heads: InnerProduct (default and axis 2), Dropout at test, Flatten, Reshape,
# two-bottom Scale, per-axis crop offsets.
HEADS = with_input('''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "drop" type: "Dropout" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "fc2" type: "InnerProduct" bottom: "conv1" top: "fc2" inner_product_param { num_output: 5 axis: 2 } }
layer { name: "flat" type: "Flatten" bottom: "conv1" top: "flat" }
layer { name: "resh" type: "Reshape" bottom: "flat" top: "resh" reshape_param { shape { dim: 0 dim: -1 dim: 6 } } }
layer { name: "gp" type: "Pooling" bottom: "conv1" top: "gp" pooling_param { pool: AVE global_pooling: true } }
layer { name: "gpr" type: "Reshape" bottom: "gp" top: "gpr" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "sc" type: "Scale" bottom: "conv1" bottom: "gpr" top: "sc" scale_param { axis: 0 } }
layer { name: "cropx" type: "Crop" bottom: "conv1" bottom: "gp" top: "cropx"
  crop_param { axis: 1 offset: 0 offset: 1 offset: 2 } }
''', (2, 3, 9, 8))

# Elementwise layers and MVN, each reading a conv output of both signs (Log reads a
# positive Power output); PReLU slopes are random, of both signs.
NEURONS = with_input('''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "abs" type: "AbsVal" bottom: "conv1" top: "abs" }
layer { name: "bnll" type: "BNLL" bottom: "conv1" top: "bnll" }
layer { name: "pow" type: "Power" bottom: "abs" top: "pow" power_param { power: 1.5 scale: 0.5 shift: 1 } }
layer { name: "pow2" type: "Power" bottom: "conv1" top: "pow2" power_param { power: 2 scale: -1.5 shift: 0.25 } }
layer { name: "exp" type: "Exp" bottom: "conv1" top: "exp" exp_param { base: 2 scale: 0.5 shift: -1 } }
layer { name: "expe" type: "Exp" bottom: "conv1" top: "expe" }
layer { name: "log" type: "Log" bottom: "pow" top: "log" }
layer { name: "elu" type: "ELU" bottom: "conv1" top: "elu" elu_param { alpha: 0.7 } }
layer { name: "prelu" type: "PReLU" bottom: "conv1" top: "prelu" }
layer { name: "swish" type: "Swish" bottom: "conv1" top: "swish" }
layer { name: "mvn" type: "MVN" bottom: "conv1" top: "mvn" }
layer { name: "mvn_across" type: "MVN" bottom: "conv1" top: "mvn_across" mvn_param { across_channels: true } }
layer { name: "mvn_mean" type: "MVN" bottom: "conv1" top: "mvn_mean" mvn_param { normalize_variance: false } }
''', (2, 3, 9, 8))

# OpenCV fuses BatchNorm into the following Scale, so it cannot report bn1 alone.
FUSED = {"bn1"}

CASES = {
    "alex": (ALEX, [(1, 3, 35, 35), (1, 3, 20, 20), (2, 3, 27, 31), (1, 3, 16, 17)]),
    "branches": (BRANCHES, [(1, 3, 24, 24), (1, 3, 17, 23), (2, 3, 31, 9)]),
    "heads": (HEADS, [(2, 3, 9, 8)]),
    "neurons": (NEURONS, [(2, 3, 9, 8), (1, 3, 5, 11)]),
}


def last_writers(net: Net) -> dict[str, str]:
    """Blob -> the layer that wrote it last (in-place layers overwrite their bottom)."""
    return {top: rec.name for rec in net.layers[1:] for top in rec.tops}


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_opencv(name, tmp_path):
    text, shapes = CASES[name]
    torch.manual_seed(0)
    net = Net(net_param(text), "TEST")
    randomize(net, seed=1)
    writers = {b: layer for b, layer in last_writers(net).items() if layer not in FUSED}
    assert len(writers) >= 9
    rng = np.random.default_rng(2)
    for shape in shapes:
        # a fresh OpenCV net per size, asked for every layer at once: OpenCV re-plans its
        # layer fusion on a reshape, which would hide some layers' own outputs
        cvnet = opencv_net(net, text, tmp_path)
        x = rng.normal(size=shape).astype(np.float32)
        outputs = net.forward(data=x)
        assert set(outputs) == set(net.outputs)
        cvnet.setInput(x)
        refs = dict(zip(writers.values(), cvnet.forward(list(writers.values()))))
        for blob, layer in writers.items():
            ours, ref = net.blobs[blob].data, refs[layer]
            assert ours.shape == ref.shape, (name, shape, layer)
            assert rel_error(ours, ref) < 1e-4, (name, shape, layer, rel_error(ours, ref))


def test_reshaped_input_blob_matches_opencv(tmp_path):
    """pycaffe-style use: reshape the input blob, write it, forward, read the output blob."""
    torch.manual_seed(0)
    net = Net(net_param(ALEX), "TEST")
    randomize(net, seed=3)
    cvnet = opencv_net(net, ALEX, tmp_path)
    x = np.random.default_rng(4).normal(size=(1, 3, 29, 41)).astype(np.float32)
    net.blobs["data"].reshape(*x.shape)
    net.blobs["data"].data[...] = x
    net.reshape()
    assert net.blobs["crop"].shape == (1, 4, 29, 41)
    net.forward()
    cvnet.setInput(x)
    assert rel_error(net.blobs["crop"].data, cvnet.forward("crop")) < 1e-4


def test_cv_sanity_catches_a_wrong_weight(tmp_path):
    """The comparison is sharp: one perturbed weight after saving is detected."""
    torch.manual_seed(0)
    net = Net(net_param(ALEX), "TEST")
    randomize(net, seed=5)
    cvnet = opencv_net(net, ALEX, tmp_path)
    w = net.params["conv2"][0].data
    w[0, 0, 1, 1] += 0.5
    x = np.random.default_rng(6).normal(size=(1, 3, 24, 24)).astype(np.float32)
    ours = net.forward(data=x)["crop"]
    cvnet.setInput(x)
    assert rel_error(ours, cvnet.forward("crop")) > 1e-3


def test_slice_tops_match_opencv(tmp_path):
    """Every top of a multi-top Slice (OpenCV reports them together for the layer)."""
    text = with_input('''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "cut" type: "Slice" bottom: "conv1" top: "a" top: "b" top: "c" slice_param { slice_point: 1 slice_point: 3 } }
layer { name: "rows" type: "Slice" bottom: "conv1" top: "r1" top: "r2" slice_param { axis: -2 slice_point: 4 } }
''', (2, 3, 7, 6))
    torch.manual_seed(0)
    net = Net(net_param(text), "TEST")
    randomize(net, seed=8)
    cvnet = opencv_net(net, text, tmp_path)
    x = np.random.default_rng(9).normal(size=(2, 3, 7, 6)).astype(np.float32)
    net.forward(data=x)
    cvnet.setInput(x)
    refs = cvnet.forwardAndRetrieve(["cut", "rows"])
    for tops, ref in zip((["a", "b", "c"], ["r1", "r2"]), refs):
        assert len(ref) == len(tops)
        for top, r in zip(tops, ref):
            assert net.blobs[top].shape == r.shape, top
            assert rel_error(net.blobs[top].data, r) < 1e-6, top
    assert [net.blobs[t].shape[1] for t in "abc"] == [1, 2, 2]
