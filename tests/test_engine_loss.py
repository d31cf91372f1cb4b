"""SoftmaxWithLoss, EuclideanLoss and Accuracy against plain numpy computations of Caffe's rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import net_param
from solvers.engine import Net

FLT_MIN = np.finfo(np.float32).tiny
SHAPE = (2, 5, 4, 3)   # N, C, H, W


def loss_net(loss_param: str, *, loss_weight: float | None = None, extra_top: bool = False,
             dtype=torch.float32) -> Net:
    weight = f"loss_weight: {loss_weight}" if loss_weight is not None else ""
    prob = 'top: "prob"' if extra_top else ""
    text = f'''
layer {{ name: "score" type: "Input" top: "score" input_param {{ shape {{ dim: 2 dim: 5 dim: 4 dim: 3 }} }} }}
layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: 2 dim: 1 dim: 4 dim: 3 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" {prob}
  {weight} loss_param {{ {loss_param} }} }}'''
    net = Net(net_param(text), "TRAIN", dtype=dtype)
    net.retain_blob_diffs = True
    return net


def numpy_softmax_loss(score, label, ignore, mode):
    """Caffe's SoftmaxWithLoss: loss and d loss / d score."""
    shifted = score - score.max(axis=1, keepdims=True)
    prob = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    lab = label[:, 0].astype(int)
    valid = lab != ignore if ignore is not None else np.ones_like(lab, bool)
    safe = np.where(valid, lab, 0)
    p_label = np.take_along_axis(prob, safe[:, None], axis=1)[:, 0]
    total = -np.log(np.maximum(p_label, FLT_MIN))[valid].sum()
    n, _, h, w = score.shape
    norm = {"FULL": n * h * w, "VALID": valid.sum(), "BATCH_SIZE": n, "NONE": 1}[mode]
    norm = max(1.0, float(norm))
    grad = prob.copy()
    np.put_along_axis(grad, safe[:, None], np.take_along_axis(grad, safe[:, None], 1) - 1, 1)
    grad *= valid[:, None]
    return total / norm, grad / norm


def inputs(seed: int, void_fraction: float = 0.3):
    rng = np.random.default_rng(seed)
    score = rng.normal(scale=3, size=SHAPE).astype(np.float32)
    label = rng.integers(0, 5, size=(2, 1, 4, 3)).astype(np.float32)
    label[rng.random(label.shape) < void_fraction] = 255
    return score, label


@pytest.mark.parametrize("spec,mode", [
    ("normalization: FULL", "FULL"),
    ("normalization: VALID", "VALID"),
    ("normalization: BATCH_SIZE", "BATCH_SIZE"),
    ("normalization: NONE", "NONE"),
    ("", "VALID"),                       # the default
    ("normalize: true", "VALID"),        # legacy flag
    ("normalize: false", "BATCH_SIZE"),  # legacy flag, as the FCN-VGG recipes use
    ("normalize: false normalization: FULL", "FULL"),  # normalization wins
])
def test_softmax_loss_and_gradient_match_numpy(spec, mode):
    net = loss_net(f"ignore_label: 255 {spec}", loss_weight=1.5)
    score, label = inputs(seed=len(spec))
    net.blobs["score"].data[...] = score
    net.blobs["label"].data[...] = label
    loss = net.forward_backward()
    want_loss, want_grad = numpy_softmax_loss(score.astype(np.float64), label, 255, mode)
    assert float(net.blobs["loss"].data) == pytest.approx(want_loss, rel=1e-5)
    assert loss == pytest.approx(1.5 * want_loss, rel=1e-5)
    np.testing.assert_allclose(net.blobs["score"].diff, 1.5 * want_grad, rtol=1e-5, atol=1e-7)
    ignored = label[:, 0] == 255
    assert not net.blobs["score"].diff.transpose(0, 2, 3, 1)[ignored].any()


def test_all_pixels_ignored_gives_zero_loss_and_no_division_by_zero():
    net = loss_net("ignore_label: 255")
    score, label = inputs(seed=1)
    label[...] = 255
    net.blobs["score"].data[...] = score
    net.blobs["label"].data[...] = label
    assert net.forward_backward() == 0.0
    assert not net.blobs["score"].diff.any()


def test_without_ignore_label_every_pixel_counts():
    net = loss_net("")
    score, label = inputs(seed=2, void_fraction=0.0)
    net.blobs["score"].data[...] = score
    net.blobs["label"].data[...] = label
    want, _ = numpy_softmax_loss(score.astype(np.float64), label, None, "FULL")
    assert net.forward_backward() == pytest.approx(want, rel=1e-5)


def test_probability_clamped_at_flt_min():
    """A hopeless pixel costs -log(FLT_MIN) = 87.34, not infinity, and its gradient stays finite."""
    net = loss_net("normalization: NONE")
    score = np.zeros(SHAPE, np.float32)
    score[:, 0] = 200.0          # class 0 certain everywhere ...
    label = np.ones((2, 1, 4, 3), np.float32)   # ... but the label says class 1
    net.blobs["score"].data[...] = score
    net.blobs["label"].data[...] = label
    loss = net.forward_backward()
    assert loss == pytest.approx(-np.log(FLT_MIN) * label.size, rel=1e-6)
    diff = net.blobs["score"].diff
    assert np.isfinite(diff).all()
    np.testing.assert_allclose(diff[:, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(diff[:, 1], -1.0, atol=1e-6)


def test_second_top_is_probability():
    net = loss_net("ignore_label: 255", extra_top=True)
    score, label = inputs(seed=3)
    out = net.forward(score=score, label=label)
    e = np.exp(score - score.max(1, keepdims=True))
    np.testing.assert_allclose(out["prob"], e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert net.layers[-1].loss_weights == [1.0, 0.0]


def test_label_out_of_range_names_the_layer():
    net = loss_net("")          # no ignore_label: 255 is an invalid class
    score, label = inputs(seed=4)
    with pytest.raises(Exception, match="layer 'loss'.*label 255 outside"):
        net.forward(score=score, label=label)


def test_euclidean_loss_matches_numpy():
    text = '''
layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 3 dim: 2 dim: 4 } } }
layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 3 dim: 8 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" loss_weight: 3 }'''
    net = Net(net_param(text), "TRAIN", dtype=torch.float64)
    net.retain_blob_diffs = True
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 8))
    net.blobs["a"].data[...] = a
    net.blobs["b"].data[...] = b
    d = a.reshape(3, -1) - b
    assert net.forward_backward() == pytest.approx(3 * (d ** 2).sum() / 6)
    np.testing.assert_allclose(net.blobs["a"].diff, 3 * d.reshape(a.shape) / 3)
    np.testing.assert_allclose(net.blobs["b"].diff, -3 * d / 3)


@pytest.mark.parametrize("top_k", [1, 2])
def test_accuracy_matches_numpy(top_k):
    text = f'''
layer {{ name: "score" type: "Input" top: "score" input_param {{ shape {{ dim: 2 dim: 5 dim: 4 dim: 3 }} }} }}
layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: 2 dim: 1 dim: 4 dim: 3 }} }} }}
layer {{ name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" top: "per_class"
  accuracy_param {{ top_k: {top_k} ignore_label: 255 }} }}'''
    net = Net(net_param(text), "TEST")
    score, label = inputs(seed=5)
    out = net.forward(score=score, label=label)
    lab = label[:, 0].astype(int)
    valid = lab != 255
    # Caffe: num_better starts at -1 and counts every class scoring >= the label's
    better = (score >= np.take_along_axis(score, np.where(valid, lab, 0)[:, None], 1)).sum(1) - 1
    hit = (better < top_k) & valid
    assert float(out["acc"]) == pytest.approx(hit.sum() / valid.sum())
    for c in range(5):
        seen = (lab == c) & valid
        want = hit[seen].sum() / seen.sum() if seen.any() else 0.0
        assert out["per_class"][c] == pytest.approx(want)
    assert all(w == 0 for w in net.layers[-1].loss_weights)
