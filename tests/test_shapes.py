"""Shape inference: Caffe's size rules, checked against their formulas and against OpenCV's Caffe
importer on nets with odd sizes, pooling ceil/clip edge cases, dilation, deconvolution, crops."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fcn_topologies import fcn8s, fcn_alexnet, opencv_shapes
from netgen.errors import FcnkitError
from netgen.netspec import L, NetSpec, P
from netgen.proto import caffe_pb2
from netgen.schema import parse_prototxt
from netgen.shapes import blob_shapes, filter_phase, layer_shapes, param_shapes


def _tops(n: NetSpec, sizes=None) -> dict:
    return {ls.layer.name: ls.tops[0] if len(ls.tops) == 1 else ls.tops
            for ls in layer_shapes(n.to_proto(), sizes)}


def _net(text: str) -> caffe_pb2.NetParameter:
    return parse_prototxt(text, caffe_pb2.NetParameter)


def _single(layer_fn, in_shape=(1, 3, 20, 20), **kw):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=list(in_shape)))
    n.out = layer_fn(n.data, **kw)
    return _tops(n)["out"]


@pytest.mark.parametrize("i,k,s,p,d", [(20, 3, 1, 1, 1), (21, 3, 2, 0, 1), (500, 3, 1, 100, 1),
                                       (16, 7, 1, 0, 1), (23, 3, 2, 2, 2), (9, 11, 4, 100, 1),
                                       (2, 3, 2, 0, 1)])
def test_convolution_size(i, k, s, p, d):
    out = _single(L.Convolution, (1, 3, i, i + 1), kernel_size=k, stride=s, pad=p, dilation=d,
                  num_output=5)
    # C++ integer division truncates toward zero: (2 - 3) / 2 == 0, so a 2-pixel input still
    # gives one output under a 3-wide window with stride 2
    expect = [math.trunc((x + 2 * p - (d * (k - 1) + 1)) / s) + 1 for x in (i, i + 1)]
    assert out == (1, 5, *expect)


@pytest.mark.parametrize("i,k,s,p,d", [(16, 64, 32, 0, 1), (34, 4, 2, 0, 1), (5, 63, 32, 0, 1),
                                       (7, 3, 2, 1, 2)])
def test_deconvolution_size(i, k, s, p, d):
    out = _single(L.Deconvolution, (1, 4, i, i), convolution_param=dict(
        num_output=6, kernel_size=k, stride=s, pad=p, dilation=d, group=2))
    assert out == (1, 6, *[s * (i - 1) + d * (k - 1) + 1 - 2 * p] * 2)


@pytest.mark.parametrize("i,k,s,p,expect", [
    (500 + 198, 2, 2, 0, 349), (349, 2, 2, 0, 175), (175, 2, 2, 0, 88),   # ceil: odd sizes round up
    (5, 2, 2, 1, 3),    # ceil gives 4, but the 4th window would start in the padding: clipped
    (6, 3, 2, 1, 4), (7, 3, 2, 1, 4), (4, 3, 3, 2, 2), (13, 3, 2, 0, 6),
])
def test_pooling_size_with_ceil_and_clip(i, k, s, p, expect):
    assert _single(L.Pooling, (1, 2, i, i), kernel_size=k, stride=s, pad=p,
                   pool=P.Pooling.MAX)[2:] == (expect, expect)


def test_pooling_variants():
    assert _single(L.Pooling, (1, 2, 7, 9), global_pooling=True, pool=P.Pooling.AVE) == (1, 2, 1, 1)
    assert _single(L.Pooling, (1, 2, 7, 9), kernel_h=3, kernel_w=2, stride_h=2, stride_w=3) == \
        (1, 2, 3, 4)
    assert _single(L.Pooling, (1, 2, 7, 7), kernel_size=2, stride=2, round_mode=1) == (1, 2, 3, 3)
    with pytest.raises(FcnkitError, match="pad .* must be smaller than kernel"):
        _single(L.Pooling, kernel_size=2, pad=2)
    with pytest.raises(FcnkitError, match="4-axis"):
        _single(L.Pooling, (1, 2, 7), kernel_size=2)


def _random_chain(rng: np.random.Generator) -> tuple[NetSpec, tuple]:
    """A chain of convolutions, poolings and deconvolutions with random windows and sizes."""
    shape = (1, 2, int(rng.integers(9, 60)), int(rng.integers(9, 60)))
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=list(shape)))
    top = n.data
    for i in range(int(rng.integers(2, 7))):
        kind = rng.choice(["conv", "pool", "deconv"])
        if kind == "conv":
            k = int(rng.integers(1, 6))
            layer = L.Convolution(top, num_output=2, kernel_size=k, stride=int(rng.integers(1, 4)),
                                  pad=int(rng.integers(0, 4)), dilation=int(rng.integers(1, 3)))
        elif kind == "pool":
            k = int(rng.integers(2, 5))
            layer = L.Pooling(top, kernel_size=k, stride=int(rng.integers(1, 4)),
                              pad=int(rng.integers(0, k)),
                              pool=[P.Pooling.MAX, P.Pooling.AVE][int(rng.integers(0, 2))])
        else:
            k = int(rng.integers(1, 7))
            layer = L.Deconvolution(top, convolution_param=dict(
                num_output=2, kernel_size=k, stride=int(rng.integers(1, 4)),
                pad=int(rng.integers(0, (k + 1) // 2))))
        n[f"l{i}"] = layer
        try:
            layer_shapes(n.to_proto())
        except FcnkitError:    # the input became too small: keep the chain so far
            del n[f"l{i}"]
            break
        top = layer
    return n, shape


@pytest.mark.parametrize("seed", range(25))
def test_random_chains_match_opencv(seed):
    n, shape = _random_chain(np.random.default_rng(seed))
    net = n.to_proto()
    ours = {ls.layer.name: ls.tops[0] for ls in layer_shapes(net)}
    theirs = opencv_shapes(net, shape)
    assert {k: theirs[k] for k in ours if k != "data"} == {k: v for k, v in ours.items() if k != "data"}


@pytest.mark.parametrize("build,size", [(fcn8s, (37, 53)), (fcn8s, (1, 1)), (fcn8s, (101, 64)),
                                        (fcn_alexnet, (77, 31))])
def test_fcn_nets_match_opencv(build, size):
    net = build(size, width=1 / 64).to_proto()
    ours = {ls.layer.name: ls.tops[0] for ls in layer_shapes(net)}
    theirs = opencv_shapes(net, (1, 3, *size))
    assert ours["score"] == (1, 21, *size)
    assert {k: theirs[k] for k in ours if k != "data"} == {k: v for k, v in ours.items() if k != "data"}


def test_mixed_layers_match_opencv():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 4, 13, 11]))
    n.conv = L.Convolution(n.data, num_output=6, kernel_h=3, kernel_w=1, pad_w=2, pad_h=0, group=2)
    n.bn = L.BatchNorm(n.conv)
    n.sc = L.Scale(n.bn, bias_term=True)
    n.prelu = L.PReLU(n.sc)
    n.norm = L.LRN(n.prelu, local_size=3)
    n.cat = L.Concat(n.norm, n.conv, axis=1)
    n.s0, n.s1 = L.Slice(n.cat, slice_point=[5], axis=1, ntop=2)
    n.pool = L.Pooling(n.data, kernel_size=3, stride=1, pool=P.Pooling.AVE)
    n.crop = L.Crop(n.s0, n.pool, crop_param=dict(axis=2, offset=[0, 3]))
    n.sum = L.Eltwise(n.crop, n.crop, operation=P.Eltwise.MAX)
    n.flat = L.Flatten(n.sum)
    n.ip = L.InnerProduct(n.flat, num_output=7)
    n.resh = L.Reshape(n.ip, shape=dict(dim=[0, -1, 1]))
    n.prob = L.Softmax(n.resh)
    net = n.to_proto()
    ours = {ls.layer.name: ls.tops[0] for ls in layer_shapes(net)}
    assert ours["cat"] == (2, 12, 11, 15) and ours["crop"] == (2, 5, 11, 9)
    assert ours["flat"] == (2, 495) and ours["resh"] == (2, 7, 1)
    theirs = opencv_shapes(net, (2, 4, 13, 11))
    assert {k: theirs[k] for k in ours if k != "data"} == {k: v for k, v in ours.items() if k != "data"}


def test_crop_rules_and_bounds():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 10, 12]))
    n.ref = L.Input(shape=dict(dim=[1, 1, 6, 6]))
    n.c2 = L.Crop(n.data, n.ref, crop_param=dict(offset=[4, 6]))
    n.c1 = L.Crop(n.data, n.ref, crop_param=dict(axis=1, offset=[2]))
    n.c0 = L.Crop(n.data, n.ref)
    tops = _tops(n)
    assert tops["c2"] == (1, 3, 6, 6) and tops["c1"] == (1, 1, 6, 6) and tops["c0"] == (1, 3, 6, 6)
    n.bad = L.Crop(n.data, n.ref, crop_param=dict(offset=[5, 0]))
    with pytest.raises(FcnkitError, match=r"layer bad \(Crop\): crop is out of bounds"):
        _tops(n)


def test_fcn_crop_out_of_bounds_when_score_is_cropped_too_far():
    net = fcn8s((40, 40), width=1 / 64).to_proto()
    up = blob_shapes(net)["upscore8"][2]
    net.layer[-1].crop_param.offset[0] = up - 40 + 1
    with pytest.raises(FcnkitError, match=r"layer score \(Crop\): crop is out of bounds"):
        layer_shapes(net)


def test_shape_errors():
    n = NetSpec()
    n.a = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.b = L.Input(shape=dict(dim=[1, 3, 8, 9]))
    n.sum = L.Eltwise(n.a, n.b)
    with pytest.raises(FcnkitError, match=r"layer sum \(Eltwise\): bottoms must have the same shape"):
        _tops(n)
    with pytest.raises(FcnkitError, match="too small"):
        _single(L.Convolution, (1, 3, 4, 4), kernel_size=7, num_output=2)
    with pytest.raises(FcnkitError, match="divisible by group"):
        _single(L.Convolution, (1, 3, 4, 4), kernel_size=1, num_output=2, group=2)
    with pytest.raises(FcnkitError, match=r"layer x \(Mystery\): no shape rule"):
        layer_shapes(_net('layer { name: "x" type: "Mystery" }'))
    with pytest.raises(FcnkitError, match="bottom 'nope' is not made"):
        layer_shapes(_net('layer { name: "r" type: "ReLU" bottom: "nope" top: "r" }'))


def test_losses_and_labels():
    n = NetSpec()
    n.score = L.Input(shape=dict(dim=[1, 21, 5, 7]))
    n.label = L.Input(shape=dict(dim=[1, 1, 5, 7]))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    n.acc, n.per_class = L.Accuracy(n.score, n.label, ntop=2)
    n.best = L.ArgMax(n.score, axis=1)
    n.top2 = L.ArgMax(n.score, top_k=2, out_max_val=True)
    tops = _tops(n)
    assert tops["loss"] == () and tops["acc"] == [(), (21,)]
    assert tops["best"] == (1, 1, 5, 7) and tops["top2"] == (1, 2, 2, 1)
    n.wrong = L.Input(shape=dict(dim=[1, 1, 5, 6]))
    n.bad = L.SoftmaxWithLoss(n.score, n.wrong)
    with pytest.raises(FcnkitError, match=r"layer bad \(SoftmaxWithLoss\): label"):
        _tops(n)


def test_python_data_layers_need_sizes():
    net = _net("""
      layer { name: "data" type: "Python" top: "data" top: "label"
              python_param { module: "voc_layers" layer: "VOCSegDataLayer" } }
      layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
              convolution_param { num_output: 21 kernel_size: 1 } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss" }
    """)
    with pytest.raises(FcnkitError, match=r"layer conv .*bottom 'data'.*unknown; give it"):
        layer_shapes(net)
    with pytest.raises(FcnkitError, match=r"bottom 'label'"):
        layer_shapes(net, {"data": (1, 3, 9, 9)})
    shapes = blob_shapes(net, {"data": (1, 3, 9, 9), "label": (1, 1, 9, 9)})
    assert shapes == {"data": (1, 3, 9, 9), "label": (1, 1, 9, 9), "conv": (1, 21, 9, 9), "loss": ()}
    with pytest.raises(FcnkitError, match="sizes names 'conv'"):
        layer_shapes(net, {"data": (1, 3, 9, 9), "label": (1, 1, 9, 9), "conv": (1, 1, 1, 1)})


def test_inputs_from_the_net():
    legacy = _net('input: "data" input_dim: [1, 3, 5, 6] '
                  'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }')
    assert blob_shapes(legacy) == {"data": (1, 3, 5, 6)}
    assert blob_shapes(legacy, {"data": (2, 3, 4, 4)}) == {"data": (2, 3, 4, 4)}
    dummy = _net('layer { name: "d" type: "DummyData" top: "a" top: "b" '
                 'dummy_data_param { num: [2, 3] channels: 1 height: 4 width: [5, 6] } }')
    assert blob_shapes(dummy) == {"a": (2, 1, 4, 5), "b": (3, 1, 4, 6)}
    shared = _net('layer { name: "i" type: "Input" top: "a" top: "b" '
                  'input_param { shape { dim: [1, 2] } } }')
    assert blob_shapes(shared) == {"a": (1, 2), "b": (1, 2)}


def test_reshape_flatten_slice_rules():
    assert _single(L.Reshape, (2, 3, 4, 5), shape=dict(dim=[0, 0, -1])) == (2, 3, 20)
    assert _single(L.Reshape, (2, 3, 4, 5), shape=dict(dim=[-1]), axis=1, num_axes=2) == (2, 12, 5)
    assert _single(L.Reshape, (2, 3, 4, 5), shape=dict(dim=[1]), axis=-1, num_axes=0) == (2, 3, 4, 5, 1)
    with pytest.raises(FcnkitError, match="cannot be reshaped|cannot infer"):
        _single(L.Reshape, (2, 3, 4, 5), shape=dict(dim=[7, -1]))
    assert _single(L.Flatten, (2, 3, 4, 5), axis=2) == (2, 3, 20)
    assert _single(L.Flatten, (2, 3, 4, 5), axis=1, end_axis=2) == (2, 12, 5)
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 6, 2, 2]))
    n.a, n.b, n.c = L.Slice(n.data, ntop=3)
    n.x, n.y = L.Slice(n.data, slice_point=[1], ntop=2)
    tops = {ls.layer.name: ls.tops for ls in layer_shapes(n.to_proto())}
    assert tops["a"] == [(1, 2, 2, 2)] * 3 and tops["x"] == [(1, 1, 2, 2), (1, 5, 2, 2)]
    assert _single(L.InnerProduct, (2, 3, 4, 5), num_output=7, axis=2) == (2, 3, 7)
    assert _single(L.Tile, (2, 3, 4, 5), tiles=3, axis=-1) == (2, 3, 4, 15)
    assert _single(L.Reduction, (2, 3, 4, 5), axis=2) == (2, 3)


def _rules(*specs):
    return [caffe_pb2.NetStateRule(**s) for s in specs]


def test_filter_phase_follows_caffe():
    net = caffe_pb2.NetParameter()
    for name, inc, exc in [
        ("always", [], []),
        ("train", [dict(phase=caffe_pb2.TRAIN)], []),
        ("test", [dict(phase=caffe_pb2.TEST)], []),
        ("not_test", [], [dict(phase=caffe_pb2.TEST)]),
        ("staged", [dict(stage=["deploy"])], []),
        ("both_stages", [dict(stage=["a", "b"])], []),
        ("not_stage", [dict(not_stage=["deploy"])], []),
        ("level", [dict(min_level=1, max_level=2)], []),
        ("any_rule", [dict(phase=caffe_pb2.TRAIN), dict(stage=["deploy"])], []),
    ]:
        layer = net.layer.add(name=name, type="ReLU")
        layer.include.extend(_rules(*inc))
        layer.exclude.extend(_rules(*exc))
    kept = lambda *a, **k: [l.name for l in filter_phase(net, *a, **k).layer]
    assert kept("TRAIN") == ["always", "train", "not_test", "not_stage", "any_rule"]
    assert kept("test") == ["always", "test", "not_stage"]
    assert kept(caffe_pb2.TEST, stages=["deploy"]) == ["always", "test", "staged", "any_rule"]
    assert kept("TEST", stages=["a"], level=1) == ["always", "test", "not_stage", "level"]
    assert kept("TEST", stages=["a", "b"], level=3) == ["always", "test", "both_stages", "not_stage"]
    assert len(net.layer) == 9   # the input is untouched
    net.layer[0].include.add(phase=caffe_pb2.TEST)
    net.layer[0].exclude.add(phase=caffe_pb2.TRAIN)
    with pytest.raises(FcnkitError, match=r"layer always \(ReLU\): give include OR exclude"):
        filter_phase(net, "TEST")
    with pytest.raises(FcnkitError, match="TRAIN or TEST"):
        filter_phase(net, "VAL")


def test_phase_argument_filters_before_shapes():
    net = _net("""
      layer { name: "d1" type: "Input" top: "data" include { phase: TRAIN }
              input_param { shape { dim: [1, 3, 8, 8] } } }
      layer { name: "d2" type: "Input" top: "data" include { phase: TEST }
              input_param { shape { dim: [1, 3, 5, 5] } } }
    """)
    assert blob_shapes(net, phase="TRAIN") == {"data": (1, 3, 8, 8)}
    assert blob_shapes(net, phase="TEST") == {"data": (1, 3, 5, 5)}


def test_param_shapes():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 4, 9, 9]))
    n.conv = L.Convolution(n.data, num_output=6, kernel_h=3, kernel_w=5, group=2)
    n.nobias = L.Convolution(n.data, num_output=8, kernel_size=1, bias_term=False)
    n.up = L.Deconvolution(n.conv, convolution_param=dict(num_output=4, kernel_size=4, stride=2,
                                                          group=2, bias_term=False))
    n.ip = L.InnerProduct(n.conv, num_output=10)
    n.ip2 = L.InnerProduct(n.conv, num_output=3, axis=2, transpose=True)
    n.bn = L.BatchNorm(n.conv)
    n.sc = L.Scale(n.bn, bias_term=True)
    n.sc2 = L.Scale(n.bn, axis=2, num_axes=-1)
    n.bias = L.Bias(n.bn, num_axes=0)
    n.pr = L.PReLU(n.conv)
    n.pr1 = L.PReLU(n.conv, channel_shared=True)
    n.relu = L.ReLU(n.conv)
    got = param_shapes(n.to_proto())
    assert got == {
        "conv": [(6, 2, 3, 5), (6,)], "nobias": [(8, 4, 1, 1)], "up": [(6, 2, 4, 4)],
        "ip": [(10, 6 * 7 * 5), (10,)], "ip2": [(7 * 5, 3), (3,)],
        "bn": [(6,), (6,), (1,)], "sc": [(6,), (6,)], "sc2": [(7, 5)], "bias": [()],
        "pr": [(6,)], "pr1": [()],
    }
    assert list(got) == ["conv", "nobias", "up", "ip", "ip2", "bn", "sc", "sc2", "bias", "pr", "pr1"]


@pytest.mark.parametrize("layer_fn,kw,message", [
    (L.Convolution, dict(num_output=2), "kernel_size .* is required"),
    (L.Convolution, dict(num_output=2, kernel_h=3), "kernel_h and kernel_w must be given together"),
    (L.Convolution, dict(num_output=2, kernel_size=3, kernel_h=3, kernel_w=3), "not both"),
    (L.Convolution, dict(num_output=2, kernel_size=3, stride=0), "stride must be positive"),
    (L.Convolution, dict(num_output=2, kernel_size=[3, 3, 3]), "3 values for 2 spatial axes"),
    (L.Convolution, dict(num_output=0, kernel_size=1), "num_output must be positive"),
    (L.Pooling, dict(kernel_size=2, stride_h=2), "stride_h and stride_w must be given together"),
    (L.Pooling, dict(global_pooling=True, kernel_size=2), "global_pooling takes no kernel"),
    (L.Pooling, dict(global_pooling=True, stride=2), "pad 0 and stride 1"),
    (L.Pooling, dict(stride=2), "kernel_size .* is required"),
])
def test_window_option_errors_name_the_layer(layer_fn, kw, message):
    with pytest.raises(FcnkitError, match=r"layer out \(\w+\): .*" + message):
        _single(layer_fn, **kw)
