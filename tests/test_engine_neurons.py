"""The elementwise, slicing, reduction and sigmoid-loss layers against numpy transcriptions of
Caffe's formulas, where OpenCV cannot referee (options it ignores or lacks), and the option
checks that reject what Caffe rejects."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import net_param
from netgen.errors import FcnkitError
from solvers.engine import Net

SHAPE = (2, 3, 4, 5)


def _input(name: str, shape) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def single(body: str, shape=SHAPE, phase: str = "TEST", extra: str = "") -> Net:
    torch.manual_seed(0)
    return Net(net_param(_input("data", shape) + extra + body), phase, dtype=torch.float64)


def layer(kind: str, options: str = "", bottom: str = "data") -> str:
    return f'layer {{ name: "y" type: "{kind}" bottom: "{bottom}" top: "y" {options} }}'


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


X = np.random.default_rng(1).normal(scale=2, size=SHAPE)
POS = np.abs(X) + 0.1

ELEMENTWISE = {
    "absval": ("AbsVal", "", X, np.abs),
    "bnll": ("BNLL", "", X * 60, lambda x: np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))),
                                                      np.log1p(np.exp(np.minimum(x, 0))))),
    "power": ("Power", "power_param { power: 2.5 scale: 0.5 shift: 2 }", POS,
              lambda x: (2 + 0.5 * x) ** 2.5),
    "power_zero": ("Power", "power_param { power: 0 scale: 3 shift: -2 }", X, np.ones_like),
    "power_scale_zero": ("Power", "power_param { power: 3 scale: 0 shift: -2 }", X,
                         lambda x: np.full_like(x, -8.0)),
    "power_identity": ("Power", "", X, lambda x: x),
    "exp_e": ("Exp", "exp_param { scale: -0.5 shift: 0.75 }", X, lambda x: np.exp(0.75 - 0.5 * x)),
    "exp_base": ("Exp", "exp_param { base: 10 scale: 0.25 shift: -1 }", X, lambda x: 10.0 ** (0.25 * x - 1)),
    "log_e": ("Log", "", POS, np.log),
    "log_base": ("Log", "log_param { base: 2 scale: 3 shift: 0.5 }", POS, lambda x: np.log2(0.5 + 3 * x)),
    "elu": ("ELU", "elu_param { alpha: 0.3 }", X,   # the option is a float32
            lambda x: np.where(x > 0, x, float(np.float32(0.3)) * (np.exp(x) - 1))),
    "elu_default": ("ELU", "", X, lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    "threshold": ("Threshold", "threshold_param { threshold: 0.5 }", X, lambda x: (x > 0.5) * 1.0),
    "clip": ("Clip", "clip_param { min: -0.5 max: 1.25 }", X, lambda x: np.clip(x, -0.5, 1.25)),
    "clip_crossed": ("Clip", "clip_param { min: 1 max: -1 }", X, lambda x: np.full_like(x, 1.0)),
    "swish": ("Swish", "", X, lambda x: x * sigmoid(x)),
    "swish_beta": ("Swish", "swish_param { beta: 2.5 }", X, lambda x: x * sigmoid(2.5 * x)),
}


@pytest.mark.parametrize("case", ELEMENTWISE)
def test_elementwise_layers_match_numpy(case):
    kind, options, x, ref = ELEMENTWISE[case]
    got = single(layer(kind, options)).forward(data=x)["y"]
    np.testing.assert_allclose(got, ref(x), rtol=1e-12, atol=1e-300)


def _input_gradient(body: str, x: np.ndarray, weight_top: str = "y") -> np.ndarray:
    """d(sum of `weight_top`)/d(data) as the engine's backward leaves it in data's diff."""
    text = body.replace(f'top: "{weight_top}" ', f'top: "{weight_top}" loss_weight: 1 ', 1)
    net = single(text, x.shape, phase="TRAIN")
    net.retain_blob_diffs = True
    net.blobs["data"].data[...] = x
    net.forward_backward()
    return net.blobs["data"].diff.copy()


def test_clip_gradient_passes_on_the_closed_interval():
    x = np.array([-2.0, -0.5, 0.0, 1.25, 3.0]).reshape(1, 5)
    grad = _input_gradient(layer("Clip", "clip_param { min: -0.5 max: 1.25 }"), x)
    np.testing.assert_array_equal(grad, [[0, 1, 1, 1, 0]])


def test_absval_and_prelu_gradients_at_zero_follow_caffe():
    x = np.array([-1.5, 0.0, 2.0]).reshape(1, 3)
    np.testing.assert_array_equal(_input_gradient(layer("AbsVal"), x), [[-1, 0, 1]])
    # PReLU: x > 0 takes the identity, x <= 0 the slope (0.25 by default)
    np.testing.assert_array_equal(
        _input_gradient(layer("PReLU", "prelu_param { channel_shared: true }"), x), [[0.25, 0.25, 1]])


def test_threshold_passes_no_gradient():
    net = single(layer("Threshold") + '\nlayer { name: "s" type: "Scale" bottom: "y" top: "z" loss_weight: 1 }',
                 phase="TRAIN")
    net.retain_blob_diffs = True
    net.blobs["data"].data[...] = X
    net.forward_backward()
    assert not net.blobs["data"].diff.any()
    np.testing.assert_array_equal(net.params["s"][0].diff, (X > 0).sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_slopes_default_fill_and_round_trip(shared, tmp_path):
    body = layer("PReLU", f"prelu_param {{ channel_shared: {str(shared).lower()} }}")
    net = single(body)
    slope = net.params["y"][0]
    assert slope.shape == (() if shared else (3,))
    assert (slope.data == 0.25).all()
    a = np.array(-0.7) if shared else np.array([0.5, -2.0, 0.0])
    slope.data = a
    view = a if shared else a[None, :, None, None]
    np.testing.assert_allclose(net.forward(data=X)["y"], np.where(X > 0, X, view * X), rtol=1e-15)
    net.save(tmp_path / "p.caffemodel")
    again = single(body)
    again.copy_from(tmp_path / "p.caffemodel")
    np.testing.assert_array_equal(again.params["y"][0].data, np.float32(a))


def test_prelu_filler_sets_initial_slopes():
    net = single(layer("PReLU", 'prelu_param { filler { type: "constant" value: -0.125 } }'))
    np.testing.assert_array_equal(net.params["y"][0].data, [-0.125] * 3)


@pytest.mark.parametrize("options,tops,sizes,axis", [
    ("", 3, [1, 1, 1], 1),
    ("slice_param { slice_dim: 0 }", 2, [1, 1], 0),
    ("slice_param { axis: -1 slice_point: 1 slice_point: 4 }", 3, [1, 3, 1], 3),
    ("slice_param { axis: 2 slice_point: 3 }", 2, [3, 1], 2),
    ("slice_param { axis: 2 }", 1, [4], 2),
])
def test_slice_matches_numpy_split(options, tops, sizes, axis):
    names = [f"t{i}" for i in range(tops)]
    net = single('layer { name: "s" type: "Slice" bottom: "data" '
                 + " ".join(f'top: "{n}"' for n in names) + f" {options} }}")
    out = net.forward(data=X)
    pieces = np.split(X, np.cumsum(sizes)[:-1], axis=axis)
    for n, want in zip(names, pieces):
        np.testing.assert_array_equal(out[n], want)


@pytest.mark.parametrize("axis,tiles", [(1, 3), (0, 2), (-1, 2), (2, 1)])
def test_tile_matches_numpy_tile(axis, tiles):
    got = single(layer("Tile", f"tile_param {{ axis: {axis} tiles: {tiles} }}")).forward(data=X)["y"]
    reps = [1] * X.ndim
    reps[axis] = tiles
    # Caffe tiles the whole block of axes from `axis` on, which is numpy.tile on that axis
    np.testing.assert_array_equal(got, np.tile(X, reps))


REDUCE = {"SUM": np.sum, "ASUM": lambda x, axis: np.abs(x).sum(axis),
          "SUMSQ": lambda x, axis: (x * x).sum(axis), "MEAN": np.mean}


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_reduction_matches_numpy(op, axis):
    got = single(layer("Reduction", f"reduction_param {{ operation: {op} axis: {axis} coeff: -1.5 }}")
                 ).forward(data=X)["y"]
    start = axis % X.ndim
    want = -1.5 * REDUCE[op](X, axis=tuple(range(start, X.ndim)))
    assert got.shape == X.shape[:start]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_reduction_defaults_sum_everything():
    assert single(layer("Reduction")).forward(data=X)["y"] == pytest.approx(X.sum(), rel=1e-12)


def _mvn_reference(x, across: bool, eps: float):
    rows = x.reshape(x.shape[0], -1) if across else x.reshape(x.shape[0] * x.shape[1], -1)
    d = rows - rows.mean(axis=1, keepdims=True)
    std = np.sqrt((d * d).mean(axis=1, keepdims=True)) + eps
    return d / std, std


@pytest.mark.parametrize("across", [False, True])
def test_mvn_adds_eps_after_the_square_root_and_backpropagates_as_caffe(across):
    eps = 0.5   # large, so where eps goes and Caffe's eps-free backward formula both show
    body = (layer("MVN", f"mvn_param {{ across_channels: {str(across).lower()} eps: {eps} }}")
            + '\nlayer { name: "p" type: "Eltwise" bottom: "y" bottom: "g" top: "p" loss_weight: 1 '
              'eltwise_param { operation: PROD } }')
    net = single(body, phase="TRAIN", extra=_input("g", SHAPE))
    g = np.random.default_rng(2).normal(size=SHAPE)
    net.retain_blob_diffs = True
    net.blobs["data"].data[...] = X
    net.blobs["g"].data[...] = g
    net.forward_backward()
    y, std = _mvn_reference(X, across, eps)
    np.testing.assert_allclose(net.blobs["y"].data, y.reshape(SHAPE), rtol=1e-12)
    dy = g.reshape(y.shape)
    dx = (dy - dy.mean(axis=1, keepdims=True) - y * (y * dy).mean(axis=1, keepdims=True)) / std
    np.testing.assert_allclose(net.blobs["data"].diff, dx.reshape(SHAPE), rtol=1e-10, atol=1e-12)


def test_mvn_mean_only():
    got = single(layer("MVN", "mvn_param { normalize_variance: false }")).forward(data=X)["y"]
    np.testing.assert_allclose(got, X - X.mean(axis=(2, 3), keepdims=True), rtol=1e-12, atol=1e-15)


# normalization option -> normaliser given N = 2 items, 60 values per item, `valid` counted
SIGMOID_NORMALISERS = {
    "": lambda valid: 2,                          # Caffe's default here is BATCH_SIZE
    "normalization: BATCH_SIZE": lambda valid: 2,
    "normalization: FULL": lambda valid: 120,
    "normalization: VALID": lambda valid: valid,
    "normalization: NONE": lambda valid: 1,
    "normalize: true": lambda valid: valid,
    "normalize: false": lambda valid: 2,
}


@pytest.mark.parametrize("normalization", SIGMOID_NORMALISERS)
def test_sigmoid_cross_entropy_matches_numpy(normalization):
    rng = np.random.default_rng(3)
    x = rng.normal(scale=3, size=SHAPE)
    x[0, 0, 0, :] = 0.0                         # exactly zero scores: gradient 0.5 - t
    t = rng.random(SHAPE).round(1)              # soft targets
    t[rng.random(SHAPE) < 0.25] = 7             # ignored (any value truncating to 7)
    t[0, 1, 0, 0] = 7.9
    body = ('layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "data" bottom: "t" '
            f'top: "loss" loss_weight: 2 loss_param {{ ignore_label: 7 {normalization} }} }}')
    net = single(body, phase="TRAIN", extra=_input("t", SHAPE))
    net.retain_blob_diffs = True
    net.blobs["data"].data[...] = x
    net.blobs["t"].data[...] = t
    net.forward_backward()
    valid = np.trunc(t) != 7
    norm = max(1, SIGMOID_NORMALISERS[normalization](valid.sum()))
    loglik = x * t - np.logaddexp(x, 0)
    assert float(net.blobs["loss"].data) == pytest.approx(-(loglik * valid).sum() / norm, rel=1e-12)
    want = 2 * (sigmoid(x) - t) * valid / norm
    np.testing.assert_allclose(net.blobs["data"].diff, want, rtol=1e-12, atol=1e-15)
    assert not net.blobs["t"].diff.any()


def test_sigmoid_cross_entropy_without_ignore_label_counts_everything():
    body = ('layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "data" bottom: "t" '
            'top: "loss" loss_param { normalization: VALID } }')
    net = single(body, extra=_input("t", (2, 60)))
    t = (np.random.default_rng(4).random((2, 60)) > 0.5) * 1.0
    got = net.forward(data=X, t=t)["loss"]
    x = X.reshape(2, 60)
    assert float(got) == pytest.approx(-(x * t - np.logaddexp(x, 0)).sum() / 120, rel=1e-12)


@pytest.mark.parametrize("body,message", [
    (layer("Exp", "exp_param { base: -2 }"), "base must be positive"),
    (layer("Log", "log_param { base: 1 }"), "base 1"),
    (layer("Log", "log_param { base: 0 }"), "base must be positive"),
    (layer("Clip"), "clip_param.min and clip_param.max are required"),
    (layer("Tile", "tile_param { axis: 1 }"), "tiles must be set and positive"),
    (layer("Tile", "tile_param { tiles: 0 }"), "tiles must be set and positive"),
    (layer("Tile", "tile_param { axis: 4 tiles: 2 }"), "axis 4 out of range"),
    (layer("Reduction", "reduction_param { axis: -5 }"), "axis -5 out of range"),
    (layer("AbsVal", "power_param { power: 2 }"), "power_param is not supported by AbsVal"),
    (layer("ELU", "relu_param { negative_slope: 1 }"), "relu_param is not supported by ELU"),
    (layer("MVN", "mvn_param { across_channels: true }", bottom="five"), "MVN takes 1 to 4 axes"),
    ('layer { name: "y" type: "PReLU" bottom: "one" top: "y" }', "at least 2 axes"),
    ('layer { name: "y" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { axis: 1 slice_dim: 1 } }',
     "axis or slice_dim, not both"),
    ('layer { name: "y" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { slice_point: 1 slice_point: 2 } }',
     "2 slice_point"),
    ('layer { name: "y" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" slice_param { slice_point: 2 slice_point: 2 } }',
     "positive and increasing"),
    ('layer { name: "y" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { slice_point: 3 } }',
     "non-empty"),
    ('layer { name: "y" type: "Slice" bottom: "data" top: "a" top: "b" }', "evenly divide"),
    ('layer { name: "y" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { slice_dim: 4 } }',
     "slice_dim 4 out of range"),
    ('layer { name: "y" type: "SigmoidCrossEntropyLoss" bottom: "data" bottom: "two" top: "y" }', "differ in count"),
    ('layer { name: "y" type: "SigmoidCrossEntropyLoss" bottom: "data" bottom: "one" top: "y" }',
     "same first .batch. dimension"),
    ('layer { name: "y" type: "SigmoidCrossEntropyLoss" bottom: "data" bottom: "data" top: "y" '
     'loss_param { normalize: true } softmax_param { axis: 1 } }', "softmax_param is not supported"),
])
def test_bad_options_are_rejected_naming_the_layer(body, message):
    extra = _input("one", (7,)) + _input("two", (2, 7)) + _input("five", (1, 2, 1, 2, 2))
    with pytest.raises(FcnkitError, match=f"layer 'y' .*{message}"):
        single(body, extra=extra)


def test_clip_bounds_are_required_fields_of_the_schema():
    with pytest.raises(FcnkitError, match=r"missing required field.*clip_param\.max"):
        single(layer("Clip", "clip_param { min: 0 }"))


def test_in_place_layers_match_out_of_place():
    """Prototxts often compute these in place (top named like the bottom)."""
    chain = [("PReLU", ""), ("AbsVal", ""), ("Power", "power_param { power: 0.5 shift: 1 }"),
             ("ELU", ""), ("Clip", "clip_param { min: -1 max: 1.5 }"), ("MVN", "")]
    conv = 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 3 kernel_size: 1 } }\n'
    in_place = conv + "\n".join(f'layer {{ name: "l{i}" type: "{k}" bottom: "c" top: "c" {o} }}'
                                for i, (k, o) in enumerate(chain))
    apart = conv + "\n".join(f'layer {{ name: "l{i}" type: "{k}" bottom: "{"c" if i == 0 else f"t{i - 1}"}" '
                             f'top: "t{i}" {o} }}' for i, (k, o) in enumerate(chain))
    a, b = single(in_place, phase="TRAIN"), single(apart, phase="TRAIN")
    b.copy_from(a.to_weights())
    for net in (a, b):
        net.params["c"][0].data = np.random.default_rng(6).normal(size=(3, 3, 1, 1))
    np.testing.assert_allclose(a.forward(data=X)["c"], b.forward(data=X)[f"t{len(chain) - 1}"], rtol=1e-12)
