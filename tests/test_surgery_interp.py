"""surgery.interp: the bilinear kernel, where interp puts it, and what it computes."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2
from netgen.schema import write_prototxt
from surgery.caffemodel import Weights, save_weights
from surgery.fillers import bilinear_kernel
from surgery.interp import bilinear_weights, interp, upsample_filt


def test_upsample_filt_closed_form():
    np.testing.assert_allclose(upsample_filt(4), np.outer([.25, .75, .75, .25], [.25, .75, .75, .25]))
    np.testing.assert_allclose(upsample_filt(3), np.outer([.5, 1, .5], [.5, 1, .5]))
    assert upsample_filt(1).tolist() == [[1.0]]
    for size in range(1, 70):
        k = upsample_filt(size)
        factor = (size + 1) // 2
        center = factor - 1 if size % 2 else factor - 0.5
        ramp = [1 - abs(i - center) / factor for i in range(size)]
        np.testing.assert_allclose(k, np.outer(ramp, ramp), atol=1e-7)
        assert np.array_equal(k, k.T) and np.array_equal(k, k[::-1, ::-1])  # symmetric


def test_upsample_filt_is_caffes_bilinear_filler():
    """One kernel: the reference's upsample_filt is Caffe master's bilinear filler slice."""
    for size in range(1, 70):
        np.testing.assert_array_equal(upsample_filt(size), bilinear_kernel(size))


def test_interp_diagonal_and_single_output():
    rng = np.random.default_rng(0)
    w = Weights(up=[rng.standard_normal((5, 5, 4, 4)).astype(np.float32)],
                one=[rng.standard_normal((3, 1, 8, 8)).astype(np.float32)],
                keep=[np.ones((2, 2), np.float32)])
    bias = rng.standard_normal(5).astype(np.float32)
    w["up"].append(bias)
    assert interp(w, ["up", "one"]) == ["up", "one"]
    up = w["up"][0]
    for i in range(5):
        for j in range(5):
            assert np.array_equal(up[i, j], upsample_filt(4) if i == j else np.zeros((4, 4)))
    assert np.array_equal(w["up"][1], bias)  # biases left alone
    assert all(np.array_equal(w["one"][0][i, 0], upsample_filt(8)) for i in range(3))
    assert np.array_equal(w["keep"][0], np.ones((2, 2)))


def _deconv_net(channels, kernel, stride, pad, group, size):
    net = caffe_pb2.NetParameter(name="up")
    data = net.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, channels, size, size])
    up = net.layer.add(name="up", type="Deconvolution", bottom=["data"], top=["up"])
    p = up.convolution_param
    p.num_output, p.group, p.bias_term = channels, group, False
    p.kernel_size.append(kernel)
    p.stride.append(stride)
    p.pad.append(pad)
    return net


def test_interp_from_net_uses_group():
    net = _deconv_net(4, 6, 3, 0, 4, 5)
    w = Weights(up=[np.zeros((4, 1, 6, 6), np.float32)])
    interp(w, net)
    assert all(np.array_equal(w["up"][0][i, 0], upsample_filt(6)) for i in range(4))


def test_errors():
    with pytest.raises(FcnkitError, match="layer 'x': interp needs square kernels, got 4x3"):
        interp(Weights(x=[np.zeros((2, 2, 4, 3))]), ["x"])
    with pytest.raises(FcnkitError, match="as many input as output channels"):
        interp(Weights(x=[np.zeros((5, 3, 4, 4))]), ["x"])
    with pytest.raises(FcnkitError, match="layer 'y': no weights"):
        interp(Weights(x=[np.zeros((2, 2, 4, 4))]), ["y"])
    with pytest.raises(FcnkitError, match="as many input as output channels"):
        bilinear_weights((4, 3, 4, 4), group=2)
    with pytest.raises(FcnkitError, match="group 3 does not divide the 4 input channels"):
        bilinear_weights((4, 1, 4, 4), group=3)
    with pytest.raises(FcnkitError, match="4-d"):
        interp(Weights(x=[np.zeros((4, 4))]), ["x"])


@pytest.mark.parametrize("factor, kernel, pad, group", [
    (2, 4, 1, 1), (3, 5, 1, 1), (4, 8, 2, 3), (8, 16, 4, 1), (32, 64, 0, 1), (32, 63, 0, 1)])
def test_deconvolution_upsamples_a_ramp_bilinearly(tmp_path, factor, kernel, pad, group):
    """Run in OpenCV's Caffe Deconvolution: output pixel i sits at input coordinate
    (i + pad - (kernel - 1) / 2) / factor, and on a linear ramp bilinear interpolation is
    exact, so wherever both neighbours exist the output equals the ramp there."""
    channels, size = 3, 6
    net = _deconv_net(channels, kernel, factor, pad, group, size)
    shape = (channels, channels // group, kernel, kernel)
    w = Weights(up=[np.zeros(shape, np.float32)])
    interp(w, net)
    proto, model = tmp_path / "up.prototxt", tmp_path / "up.caffemodel"
    write_prototxt(proto, net)
    save_weights(model, w, net=net)
    ys, xs = np.mgrid[:size, :size].astype(np.float32)
    slopes = [(1.0, 0.5, 2.0), (-3.0, 1.0, 0.0), (0.25, -2.0, 5.0)]
    image = np.stack([a * ys + b * xs + c for a, b, c in slopes])[None]
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.setInput(image)
    out = cv.forward("up")[0]
    n = out.shape[-1]
    assert n == factor * (size - 1) + kernel - 2 * pad
    coord = (np.arange(n) + pad - (kernel - 1) / 2) / factor
    inside = (coord >= 0) & (coord <= size - 1)
    assert inside.sum() >= (size - 1) * factor
    cy, cx = np.meshgrid(coord[inside], coord[inside], indexing="ij")
    for ch, (a, b, c) in enumerate(slopes):
        np.testing.assert_allclose(out[ch][np.ix_(inside, inside)], a * cy + b * cx + c,
                                   atol=1e-4 * max(1, abs(a) + abs(b) + abs(c)) * size)
    assert math.isclose(float(upsample_filt(kernel).sum()), factor ** 2, rel_tol=0.02)
