"""Coordinate maps: each Caffe rule, compose/inverse, the FCN reference crop offsets, errors, and
an end-to-end check against OpenCV (a coordinate ramp pushed through a real net)."""
from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, strategies as st

from fcn_topologies import fcn8s, fcn16s, fcn32s, fcn_alexnet, opencv_net
from netgen.coord_map import (IDENTITY, PASS_THROUGH, CoordMap, compose, coord_map_between,
                              coord_map_from_to, crop, function_layer, inverse, layer_coord_map,
                              top_coord_map)
from netgen.errors import FcnkitError
from netgen.netspec import L, NetSpec, P
from netgen.schema import parse_prototxt
from netgen.proto import caffe_pb2


def _data(c=3, h=64, w=64):
    return L.Input(shape=dict(dim=[1, c, h, w]))


def _map(top):
    return layer_coord_map(function_layer(top.fn))


WINDOWS = [(1, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (2, 2, 0, 1), (7, 1, 0, 1), (3, 1, 2, 2),
           (5, 3, 4, 3), (11, 4, 100, 1), (4, 4, 0, 1)]


@pytest.mark.parametrize("k,s,p,d", WINDOWS)
def test_convolution_rule(k, s, p, d):
    m = _map(L.Convolution(_data(), kernel_size=k, stride=s, pad=p, dilation=d, num_output=4))
    k_eff = d * (k - 1) + 1
    assert m == CoordMap(1, (F(1, s),), (F(p - F(k_eff - 1, 2), s),))


@pytest.mark.parametrize("k,s,p,d", [w for w in WINDOWS if w[3] == 1 and w[2] < w[0]])
def test_pooling_rule(k, s, p, d):
    m = _map(L.Pooling(_data(), kernel_size=k, stride=s, pad=p, pool=P.Pooling.AVE))
    assert m == CoordMap(1, (F(1, s),), (F(p - F(k - 1, 2), s),))


@pytest.mark.parametrize("k,s,p,d", WINDOWS)
def test_deconvolution_rule(k, s, p, d):
    m = _map(L.Deconvolution(_data(), convolution_param=dict(
        num_output=4, kernel_size=k, stride=s, pad=p, dilation=d)))
    assert m == CoordMap(1, (F(s),), (F(d * (k - 1), 2) - p,))


def test_parameter_spellings_agree():
    """kwargs, the *_param dict, one-element lists and equal _h/_w pairs give one map."""
    maps = {_map(L.Convolution(_data(), kernel_size=3, stride=2, pad=1, num_output=2)),
            _map(L.Convolution(_data(), convolution_param=dict(kernel_size=[3], stride=[2], pad=[1],
                                                               num_output=2))),
            _map(L.Convolution(_data(), kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_h=1,
                               pad_w=1, num_output=2))}
    assert maps == {CoordMap(1, (F(1, 2),), (F(0),))}


def test_anisotropic_windows_map_each_axis():
    m = _map(L.Convolution(_data(), kernel_h=3, kernel_w=5, stride_h=1, stride_w=2, pad_h=0,
                           pad_w=4, num_output=2))
    assert m == CoordMap(1, (F(1), F(1, 2)), (F(-1), F(2, 2)))
    m = _map(L.Pooling(_data(), kernel_h=2, kernel_w=4, stride_h=2, stride_w=4))
    assert m == CoordMap(1, (F(1, 2), F(1, 4)), (F(-1, 4), F(-3, 8)))


def test_convolution_axis_is_carried():
    m = _map(L.Convolution(_data(), kernel_size=3, num_output=2, axis=2))
    assert m.axis == 2


def test_crop_rule_and_axis():
    n = NetSpec()
    n.data, n.ref = _data(), _data(h=32, w=32)
    assert _map(L.Crop(n.data, n.ref, crop_param=dict(axis=2, offset=[7]))) == \
        CoordMap(1, (F(1),), (F(-7),))
    assert _map(L.Crop(n.data, n.ref, crop_param=dict(offset=[3, 5]))) == \
        CoordMap(1, (F(1),), (F(-3), F(-5)))
    assert _map(L.Crop(n.data, n.ref, crop_param=dict(axis=3))) == CoordMap(2, (F(1),), (F(0),))


@pytest.mark.parametrize("layer_type", sorted(PASS_THROUGH))
def test_pass_through_layers_are_identity(layer_type):
    layer = caffe_pb2.LayerParameter(name="x", type=layer_type)
    assert layer_coord_map(layer) == IDENTITY


@pytest.mark.parametrize("layer_type", ["InnerProduct", "Concat", "Softmax", "Python", "Input",
                                        "Reshape", "SoftmaxWithLoss", "MadeUp"])
def test_other_layers_stop_the_walk(layer_type):
    assert layer_coord_map(caffe_pb2.LayerParameter(name="x", type=layer_type)) is None


def test_global_pooling_has_no_map():
    assert _map(L.Pooling(_data(), global_pooling=True, pool=P.Pooling.AVE)) is None


def _fraction_maps():
    frac = st.fractions(min_value=-50, max_value=50, max_denominator=64)
    scale = frac.filter(lambda x: x != 0)
    return st.builds(lambda a, b: CoordMap(1, (a,), (b,)), scale, frac)


@given(_fraction_maps(), _fraction_maps(), st.fractions(min_value=-100, max_value=100))
def test_compose_is_function_composition(m1, m2, x):
    apply = lambda m, v: m.scale[0] * v + m.shift[0]
    assert apply(compose(m1, m2), x) == apply(m1, apply(m2, x))
    assert apply(inverse(m1), apply(m1, x)) == x
    assert compose(m1, inverse(m1)) == CoordMap(1, (F(1),), (F(0),))


def test_compose_axes():
    assert compose(IDENTITY, CoordMap(2, (F(1),), (F(3),))).axis == 2
    assert compose(CoordMap(1, (F(2),), (F(0),)), IDENTITY).axis == 1
    with pytest.raises(FcnkitError, match="different axes"):
        compose(CoordMap(1, (F(1),), (F(0),)), CoordMap(2, (F(1),), (F(0),)))


def test_compose_broadcasts_per_axis_maps():
    m = compose(CoordMap(1, (F(2),), (F(1),)), CoordMap(1, (F(1), F(3)), (F(0), F(1))))
    assert m == CoordMap(1, (F(2), F(6)), (F(1), F(3)))


@pytest.mark.parametrize("build,offsets", [
    (fcn32s, {"score": [19]}),
    (fcn16s, {"score_pool4c": [5], "score": [27]}),
    (fcn8s, {"score_pool4c": [5], "score_pool3c": [9], "score": [31]}),
    (fcn_alexnet, {"score": [18]}),
])
def test_reference_fcn_offsets(build, offsets):
    net = build(width=0.01).to_proto()
    crops = {l.name: (l.crop_param.axis, list(l.crop_param.offset)) for l in net.layer if l.type == "Crop"}
    assert crops == {name: (2, off) for name, off in offsets.items()}


def test_fcn32s_map_between_named_blobs():
    net = fcn32s(width=0.01).to_proto()
    assert coord_map_between(net, "upscore", "data") == CoordMap(1, (F(1),), (F(-19),))
    assert coord_map_between(net, "score", "data") == CoordMap(1, (F(1),), (F(0),))
    # fc7 was rewritten in place by relu7 and drop7: the last version is used, same geometry
    assert coord_map_between(net, "data", "fc7") == CoordMap(1, (F(1, 32),), (F(-25, 64),))


def test_prototxt_and_netspec_agree():
    n = fcn8s(width=0.01)
    net = n.to_proto()
    for a, b in [("upscore8", "data"), ("score_pool3", "upscore_pool4"), ("pool4", "upscore2"),
                 ("data", "fuse_pool3")]:
        assert coord_map_between(net, a, b) == top_coord_map(n[a], n[b])


def test_in_place_history_is_kept():
    """A blob rewritten in place keeps one node per version; a later conv on it is one step on."""
    net = parse_prototxt("""
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: [1, 1, 9, 9] } } }
      layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
              convolution_param { num_output: 1 kernel_size: 3 stride: 2 } }
      layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
      layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
              convolution_param { num_output: 1 kernel_size: 3 stride: 2 pad: 1 } }
    """, caffe_pb2.NetParameter)
    assert coord_map_between(net, "data", "c2") == CoordMap(1, (F(1, 4),), (F(-1, 4),))


def test_crop_errors():
    n = NetSpec()
    n.data = _data()
    n.conv = L.Convolution(n.data, kernel_size=3, pad=5, num_output=2)
    n.pool = L.Pooling(n.data, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=2, kernel_size=3, stride=2))
    n.other = _data()
    n.ip = L.InnerProduct(n.data, num_output=3)
    n.chan = L.Crop(n.data, n.data, crop_param=dict(axis=1, offset=[0]))
    n.after = L.Convolution(n.chan, kernel_size=1, num_output=2)
    with pytest.raises(FcnkitError, match="scale mismatch"):
        crop(n.pool, n.data)
    with pytest.raises(FcnkitError, match="negative offset -4"):
        crop(n.data, n.conv)
    with pytest.raises(FcnkitError, match="non-integer offset 1/2"):
        crop(n.up, n.data)
    with pytest.raises(FcnkitError, match="no common ancestor"):
        crop(n.data, n.other)
    with pytest.raises(FcnkitError, match=r"stops at layer InnerProduct \(InnerProduct\)"):
        crop(n.ip, n.data)
    with pytest.raises(FcnkitError, match="different axes"):
        coord_map_from_to(n.after, n.data)


def test_prototxt_errors():
    net = fcn32s(width=0.01).to_proto()
    with pytest.raises(FcnkitError, match="no blob named 'nope'"):
        coord_map_between(net, "nope", "data")
    legacy = caffe_pb2.NetParameter()
    legacy.layers.add(name="conv1")
    with pytest.raises(FcnkitError, match="legacy V1"):
        coord_map_between(legacy, "a", "b")


def test_inconsistent_branches_are_reported():
    n = NetSpec()
    n.data = _data()
    n.a = L.Convolution(n.data, kernel_size=3, pad=1, num_output=2)
    n.b = L.Convolution(n.data, kernel_size=3, pad=0, num_output=2)
    n.sum = L.Eltwise(n.a, n.b)
    for a, b in [(n.data, n.sum), (n.sum, n.data)]:
        with pytest.raises(FcnkitError, match="different coordinate maps"):
            coord_map_from_to(a, b)


def _bilinear(k: int) -> np.ndarray:
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 else factor - 0.5
    og = np.ogrid[:k, :k]
    return (1 - abs(og[0] - centre) / factor) * (1 - abs(og[1] - centre) / factor)


def test_maps_predict_where_opencv_puts_pixels():
    """Push a coordinate ramp (channel 0 = row, channel 1 = column) through averaging windows and
    a bilinear upsampler in OpenCV: away from the borders, each output pixel holds the input
    coordinate that the coordinate map says it sits on. The crop offsets come from crop()."""
    h, w = 61, 75
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, h, w]))
    n.conv_a = L.Convolution(n.data, kernel_h=3, kernel_w=5, pad_h=3, pad_w=5, num_output=2, group=2)
    n.pool = L.Pooling(n.conv_a, kernel_size=2, stride=2, pool=P.Pooling.AVE)
    n.conv_b = L.Convolution(n.pool, kernel_size=3, dilation=2, pad_h=2, pad_w=1, num_output=2,
                             group=2)
    n.up = L.Deconvolution(n.conv_b, convolution_param=dict(num_output=2, group=2, kernel_size=4,
                                                            stride=2, bias_term=False))
    n.out = crop(n.up, n.data)
    net = n.to_proto()
    assert list(net.layer[-1].crop_param.offset) == [3, 2]   # one offset per spatial axis
    box = lambda kh, kw: np.full((2, 1, kh, kw), 1 / (kh * kw), np.float32)
    blobs = {"conv_a": [box(3, 5), np.zeros(2, np.float32)],
             "conv_b": [box(3, 3), np.zeros(2, np.float32)],
             "up": [np.stack([_bilinear(4)[None]] * 2).astype(np.float32)]}
    cv_net = opencv_net(net, blobs)
    rows, cols = np.mgrid[:h, :w].astype(np.float32)
    cv_net.setInput(np.stack([rows, cols])[None])
    out, half = (r[0] for r in cv_net.forward(["out", "conv_b"]))
    # after the crop, every interior pixel sits exactly on the data pixel of the same index
    inner = np.s_[12:h - 12, 12:w - 12]
    np.testing.assert_allclose(out[0][inner], rows[inner], atol=1e-3)
    np.testing.assert_allclose(out[1][inner], cols[inner], atol=1e-3)
    # at half resolution, conv_b pixel (y, x) sits on data coordinates (y - b) / a per axis
    m = coord_map_between(net, "data", "conv_b")
    assert m.scale == (F(1, 2),) and len(m.shift) == 2
    ys, xs = np.mgrid[:half.shape[1], :half.shape[2]]
    want = [(ys - float(m.shift[0])) * 2, (xs - float(m.shift[1])) * 2]
    inside = (want[0] > 10) & (want[0] < h - 11) & (want[1] > 10) & (want[1] < w - 11)
    assert inside.sum() > 200
    for c in (0, 1):
        np.testing.assert_allclose(half[c][inside], want[c][inside], atol=1e-3)


# ------------------------------------------------------------------ pycaffe's answers
# Facts from BVLC caffe python/caffe/coord_map.py and its test/test_coord_map.py (master 9b89154):
# coord_map_from_to returns (axis, scale, shift) with numpy arrays; unconnected tops raise
# RuntimeError; crop() asserts scale 1 and an integer shift <= 0 (AssertionError).

def _coord_net(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    """BVLC's coord_net_spec: data -> conv -> max pool -> deconv (kernel 2x its stride)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    dks = [2 * s for s in dstride] if isinstance(dstride, list) else 2 * dstride
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=dks, stride=dstride, pad=dpad)
    return n


@pytest.mark.parametrize("pool, dstride, pad, dpad, shift", [
    (2, 2, 0, 0, 0), (4, 4, 0, 0, -1), (2, 2, 7, 0, -7), (2, 2, 0, 7, 7), (2, 2, 7, 7, 0)])
def test_coord_map_from_to_returns_pycaffes_arrays(pool, dstride, pad, dpad, shift):
    n = _coord_net(pad=pad, pool=pool, dstride=dstride, dpad=dpad)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype == np.float64
    assert a.shape == b.shape == (1,)          # scalar kernel sizes: one shared entry
    assert a == 1 and b == shift and b - pad == shift - pad   # comparable, usable in arithmetic


def test_a_pointwise_path_maps_by_plain_floats():
    n = _coord_net()
    n.relu = L.ReLU(n.deconv)
    assert coord_map_from_to(n.relu, n.deconv) == (None, 1.0, 0.0)
    assert all(type(v) is float for v in coord_map_from_to(n.deconv, n.deconv)[1:])


def test_anisotropic_map_has_one_entry_per_axis():
    def deconv_to_data(n):
        return coord_map_from_to(n.deconv, n.data)

    _, a33, b33 = deconv_to_data(_coord_net(ks=3, stride=1, pad=0))
    _, a55, b55 = deconv_to_data(_coord_net(ks=5, stride=2, pad=10))
    ax, a, b = deconv_to_data(_coord_net(ks=[3, 5], stride=[1, 2], pad=[0, 10]))
    assert ax == 1 and a.shape == b.shape == (2,)
    assert (a[0], b[0], a[1], b[1]) == (a33[0], b33[0], a55[0], b55[0])


def test_nd_conv_maps_every_spatial_axis():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 100, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=[3, 3, 3], stride=[1, 1, 1], pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=4, stride=2)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and len(a) == len(b) == 3 and np.all(a == 1)
    assert b[0] - 1 == b[1] and b[1] - 1 == b[2]


def test_crop_of_crop_adds_its_offset():
    n = _coord_net()
    _, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=6)
    ax, a_crop, b_crop = coord_map_from_to(n.crop, n.data)
    assert ax == 1 and a_crop == a and b_crop == b + 6


def test_axes_of_different_counts_raise_value_error():
    """pycaffe multiplies the per-axis numpy arrays: lengths 2 and 3 do not broadcast."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20, 20]))
    n.a = L.Convolution(n.data, num_output=1, kernel_size=[3, 5], stride=[1, 2])
    n.b = L.Convolution(n.a, num_output=1, kernel_size=[3, 3, 3], pad=[0, 1, 2])
    with pytest.raises(ValueError, match="different lengths") as e:
        coord_map_from_to(n.b, n.data)
    assert isinstance(e.value, FcnkitError)


def test_unconnected_tops_raise_runtime_error():
    n, other = _coord_net(), _coord_net()
    n.ip = L.InnerProduct(n.deconv, num_output=10)   # no coordinate map: the walk stops there
    for top_from, top_to in [(n.ip, n.data), (other.deconv, n.data)]:
        with pytest.raises(RuntimeError) as e:
            coord_map_from_to(top_from, top_to)
        assert isinstance(e.value, FcnkitError)


@pytest.mark.parametrize("net_options", [dict(pool=3, dstride=2),   # scale mismatch
                                         dict(dpad=10)])            # negative offset
def test_impossible_crops_raise_assertion_error(net_options):
    n = _coord_net(**net_options)
    with pytest.raises(AssertionError) as e:
        crop(n.deconv, n.data)
    assert isinstance(e.value, FcnkitError)
