"""Layers against direct numpy transcriptions of Caffe's loops, where OpenCV cannot referee:
pooling corner cases, LRN's k, dilated deconvolution, Bias, ArgMax, BatchNorm statistics,
Dropout, DummyData, initial weights from fillers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine_helpers import net_param
from netgen.errors import FcnkitError
from solvers.engine import Net
from surgery.fillers import bilinear_kernel

FLT_MAX = np.finfo(np.float32).max


def single(layer: str, shape, phase: str = "TEST", dtype=torch.float64, extra_inputs: str = "") -> Net:
    dims = " ".join(f"dim: {d}" for d in shape)
    text = (f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
            + extra_inputs + layer)
    torch.manual_seed(0)
    return Net(net_param(text), phase, dtype=dtype)


def caffe_pool(x, k, s, p, method, ceil=True):
    """Caffe's PoolingLayer::Forward_cpu, loop for loop."""
    n, c, h, w = x.shape
    def size(n_in, k_, s_, p_):
        out = (math.ceil((n_in + 2 * p_ - k_) / s_) if ceil else (n_in + 2 * p_ - k_) // s_) + 1
        if p_ and (out - 1) * s_ >= n_in + p_:
            out -= 1
        return out
    ph, pw = size(h, k[0], s[0], p[0]), size(w, k[1], s[1], p[1])
    out = np.zeros((n, c, ph, pw))
    for i in range(ph):
        for j in range(pw):
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            if method == "MAX":
                he, we = min(hs + k[0], h), min(ws + k[1], w)
                hs, ws = max(hs, 0), max(ws, 0)
                win = x[:, :, hs:he, ws:we]
                out[:, :, i, j] = win.max(axis=(2, 3)) if win.size else -FLT_MAX
            else:
                he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
                area = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                out[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / area
    return out


POOLS = [  # kernel, stride, pad, input H x W
    ((3, 3), (2, 2), (0, 0), (7, 8)),
    ((3, 3), (2, 2), (1, 1), (7, 8)),
    ((2, 2), (2, 2), (1, 1), (5, 6)),    # pad clip rule drops a window
    ((3, 2), (2, 3), (1, 1), (9, 11)),
    ((2, 2), (3, 3), (0, 0), (7, 5)),    # stride > kernel: a window beyond the input
    ((5, 5), (3, 3), (2, 2), (6, 13)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel,stride,pad,hw", POOLS)
@pytest.mark.parametrize("round_mode", ["CEIL", "FLOOR"])
def test_pooling_matches_caffe_loops(method, kernel, stride, pad, hw, round_mode):
    layer = (f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: {method} '
             f'kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} stride_w: {stride[1]} '
             f'pad_h: {pad[0]} pad_w: {pad[1]} round_mode: {round_mode} }} }}')
    net = single(layer, (2, 3) + hw)
    x = np.random.default_rng(0).normal(size=(2, 3) + hw)
    want = caffe_pool(x, kernel, stride, pad, method, ceil=round_mode == "CEIL")
    got = net.forward(data=x)["p"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_global_pooling_and_bad_options():
    net = single('layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
                 'pooling_param { pool: MAX global_pooling: true } }', (1, 2, 5, 7))
    x = np.random.default_rng(1).normal(size=(1, 2, 5, 7))
    np.testing.assert_allclose(net.forward(data=x)["p"][..., 0, 0], x.max(axis=(2, 3)))
    for opts, msg in [("pool: STOCHASTIC kernel_size: 2", "STOCHASTIC"),
                      ("kernel_size: 2 pad: 2", "pad"),
                      ("global_pooling: true kernel_size: 2", "global_pooling"),
                      ("kernel_size: 2 kernel_h: 2 kernel_w: 2", "kernel_size"),
                      ("pad: 0", "kernel_size")]:
        with pytest.raises(FcnkitError, match=f"layer 'p' \\(Pooling\\).*{msg}"):
            single(f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ {opts} }} }}',
                   (1, 2, 5, 7))


@pytest.mark.parametrize("k", [1.0, 2.5])
def test_lrn_across_channels_uses_k(k):
    net = single(f'layer {{ name: "n" type: "LRN" bottom: "data" top: "n" '
                 f'lrn_param {{ local_size: 5 alpha: 0.375 beta: 0.625 k: {k} }} }}', (2, 3, 4, 5))
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5))
    sq = np.pad(x ** 2, ((0, 0), (2, 2), (0, 0), (0, 0)))
    window = sum(sq[:, i:i + 3] for i in range(5))
    np.testing.assert_allclose(net.forward(data=x)["n"], x * (k + 0.375 / 5 * window) ** -0.625, rtol=1e-12)


def test_lrn_within_channel_rejects_k_it_would_ignore():
    with pytest.raises(FcnkitError, match="layer 'n' \\(LRN\\).*k"):
        single('layer { name: "n" type: "LRN" bottom: "data" top: "n" '
               'lrn_param { norm_region: WITHIN_CHANNEL k: 2 } }', (1, 3, 4, 4))


def test_dilated_grouped_deconvolution_matches_scatter_loop():
    net = single('layer { name: "d" type: "Deconvolution" bottom: "data" top: "d" convolution_param '
                 '{ num_output: 4 kernel_size: 3 stride: 2 pad: 1 dilation: 2 group: 2 } }', (1, 2, 4, 5))
    w = net.params["d"][0].data      # Caffe layout (Cin, Cout / group, kh, kw)
    b = net.params["d"][1].data
    b[...] = np.random.default_rng(3).normal(size=b.shape)
    assert w.shape == (2, 2, 3, 3)
    x = np.random.default_rng(4).normal(size=(1, 2, 4, 5))
    oh, ow = 2 * 3 + 5 - 2, 2 * 4 + 5 - 2        # s(in-1) + k_eff - 2p
    full = np.zeros((1, 4, oh + 2, ow + 2))      # before removing the padding
    for ci in range(2):
        g = ci  # one input channel per group
        for co in range(2):
            for i in range(4):
                for j in range(5):
                    for ki in range(3):
                        for kj in range(3):
                            full[0, g * 2 + co, 2 * i + 2 * ki, 2 * j + 2 * kj] += x[0, ci, i, j] * w[ci, co, ki, kj]
    want = full[:, :, 1:1 + oh, 1:1 + ow] + b[None, :, None, None]
    np.testing.assert_allclose(net.forward(data=x)["d"], want, rtol=1e-12, atol=1e-12)


def test_bias_layer_both_forms():
    net = single('layer { name: "b" type: "Bias" bottom: "data" top: "b" bias_param { axis: 1 num_axes: 2 } }\n'
                 'layer { name: "b2" type: "Bias" bottom: "data" bottom: "v" top: "b2" bias_param { axis: -1 } }',
                 (2, 3, 4, 5), extra_inputs='layer { name: "v" type: "Input" top: "v" input_param { shape { dim: 5 } } }\n')
    assert net.params["b"][0].shape == (3, 4)
    assert not net.params["b"][0].data.any()          # default filler: constant 0
    rng = np.random.default_rng(5)
    bias, v, x = rng.normal(size=(3, 4)), rng.normal(size=5), rng.normal(size=(2, 3, 4, 5))
    net.params["b"][0].data = bias
    out = net.forward(data=x, v=v)
    np.testing.assert_allclose(out["b"], x + bias[None, :, :, None])
    np.testing.assert_allclose(out["b2"], x + v)


def test_scale_defaults_to_one_and_bias_to_zero():
    net = single('layer { name: "s" type: "Scale" bottom: "data" top: "s" scale_param { bias_term: true } }',
                 (1, 3, 2, 2))
    scale, bias = net.params["s"]
    assert (scale.data == 1).all() and (bias.data == 0).all()


@pytest.mark.parametrize("options,shape", [
    ("axis: 1", (2, 1, 4, 5)),
    ("axis: 1 top_k: 2 out_max_val: true", (2, 2, 4, 5)),
    ("top_k: 3", (2, 1, 3)),
    ("top_k: 2 out_max_val: true", (2, 2, 2)),
])
def test_argmax(options, shape):
    net = single(f'layer {{ name: "a" type: "ArgMax" bottom: "data" top: "a" argmax_param {{ {options} }} }}',
                 (2, 3, 4, 5))
    x = np.random.default_rng(6).normal(size=(2, 3, 4, 5))
    got = net.forward(data=x)["a"]
    assert got.shape == shape
    k = shape[1] if "axis" in options else shape[2]
    if "axis" in options:
        order = np.argsort(-x, axis=1)[:, :k]
        want = np.take_along_axis(x, order, 1) if "out_max_val" in options else order
    else:
        flat = x.reshape(2, -1)
        order = np.argsort(-flat, axis=1)[:, :k]
        want = order[:, None, :]
        if "out_max_val" in options:
            want = np.stack([order, np.take_along_axis(flat, order, 1)], axis=1)
    np.testing.assert_allclose(got, want)


def test_batchnorm_moving_averages_follow_caffe():
    layer = ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
             'batch_norm_param { moving_average_fraction: 0.875 eps: 0.0009765625 } }')
    net = single(layer, (2, 3, 4, 5), phase="TRAIN")
    assert [p.lr_mult for p in net.params["bn"]] == [0, 0, 0]
    rng = np.random.default_rng(7)
    mean_sum, var_sum, factor = 0.0, 0.0, 0.0
    for _ in range(3):
        x = rng.normal(loc=2, scale=3, size=(2, 3, 4, 5))
        out = net.forward(data=x)["bn"]
        mu, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        np.testing.assert_allclose(out, (x - mu[:, None, None]) / np.sqrt(var[:, None, None] + 2 ** -10), rtol=1e-10)
        m = x.size / 3
        factor = 0.875 * factor + 1
        mean_sum = 0.875 * mean_sum + mu
        var_sum = 0.875 * var_sum + m / (m - 1) * var
        np.testing.assert_allclose(net.params["bn"][2].data, [factor])
        np.testing.assert_allclose(net.params["bn"][0].data, mean_sum)
        np.testing.assert_allclose(net.params["bn"][1].data, var_sum)
    test = single(layer, (2, 3, 4, 5), phase="TEST")
    test.copy_from({"bn": [p.data for p in net.params["bn"]]})
    x = rng.normal(size=(2, 3, 4, 5))
    want = (x - (mean_sum / factor)[:, None, None]) / np.sqrt((var_sum / factor)[:, None, None] + 2 ** -10)
    np.testing.assert_allclose(test.forward(data=x)["bn"], want, rtol=1e-10)


def test_batchnorm_statistics_cannot_be_learned():
    with pytest.raises(FcnkitError, match="layer 'bn'.*lr_mult must be 0"):
        single('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" param { lr_mult: 1 } }',
               (1, 2, 3, 3))


def test_dropout_scales_kept_units_in_training_only():
    layer = 'layer { name: "d" type: "Dropout" bottom: "data" top: "d" dropout_param { dropout_ratio: 0.25 } }'
    x = np.ones((4, 8, 16, 16))
    train = single(layer, x.shape, phase="TRAIN").forward(data=x)["d"]
    assert set(np.unique(train)) <= {0.0, 1 / 0.75}
    assert (train == 0).mean() == pytest.approx(0.25, abs=0.02)
    np.testing.assert_array_equal(single(layer, x.shape, phase="TEST").forward(data=x)["d"], x)



def test_dropout_gradient_uses_the_forward_mask():
    layer = ('layer { name: "d" type: "Dropout" bottom: "data" top: "d" loss_weight: 1 '
             'dropout_param { dropout_ratio: 0.5 } }')
    net = single(layer, (2, 3, 8, 8), phase="TRAIN")
    net.retain_blob_diffs = True
    net.blobs["data"].data[...] = np.random.default_rng(8).normal(size=(2, 3, 8, 8))
    net.forward_backward()
    kept = net.blobs["d"].data != 0
    np.testing.assert_array_equal(net.blobs["data"].diff, np.where(kept, 2.0, 0.0))


def test_dummy_data_fills():
    text = '''
layer { name: "dd" type: "DummyData" top: "a" top: "b"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 }
                     data_filler { type: "constant" value: 7 } data_filler { type: "gaussian" std: 2 } } }
layer { name: "leg" type: "DummyData" top: "c" dummy_data_param { num: 1 channels: 2 height: 3 width: 4 } }'''
    net = Net(net_param(text), "TEST")
    out = net.forward()
    np.testing.assert_array_equal(out["a"], np.full((2, 3), 7.0))
    assert out["b"].shape == (4,) and out["b"].std() > 0
    assert out["c"].shape == (1, 2, 3, 4) and not out["c"].any()
    first_b = out["b"].copy()
    assert not np.array_equal(net.forward()["b"], first_b)   # random fillers refill per forward


def test_initial_weights_follow_fillers():
    text = '''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 5 dim: 5 } } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 6 kernel_size: 3
  weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.25 } } }
layer { name: "up" type: "Deconvolution" bottom: "c" top: "up" param { lr_mult: 0 }
  convolution_param { num_output: 6 kernel_size: 4 stride: 2 group: 6 bias_term: false weight_filler { type: "bilinear" } } }'''
    net = Net(net_param(text), "TRAIN")
    w, b = net.params["c"]
    bound = math.sqrt(3 / (4 * 9))
    assert np.abs(w.data).max() <= bound and w.data.std() > bound / 4
    assert (b.data == 0.25).all()
    np.testing.assert_array_equal(net.params["up"][0].data, np.broadcast_to(bilinear_kernel(4), (6, 1, 4, 4)))
    assert net.params["up"][0].lr_mult == 0 and not net.params["up"][0].tensor.requires_grad
