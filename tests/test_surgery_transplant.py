"""surgery.transplant / stage / score_expand on small (width-scaled) nets."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from netgen.errors import FcnkitError
from netgen.fcn import DataSpec, fcn_alexnet, fcn_vgg16
from netgen.proto import caffe_pb2
from netgen.schema import write_prototxt
from surgery.caffemodel import Weights, load_weights, save_weights
from surgery.classifiers import caffenet, vgg16
from surgery.fillers import Filler
from surgery.interp import bilinear_weights
from surgery.score_expand import expand_score
from surgery.shapes import net_params, param_shapes
from surgery.stage import stage_init
from surgery.transplant import transplant

WIDTH = 1 / 16


def random_weights(net: caffe_pb2.NetParameter, seed: int = 0) -> Weights:
    """He-scaled random weights (activations stay O(1) through the net), small random biases."""
    rng = np.random.default_rng(seed)
    weights = Weights(types={layer.name: layer.type for layer in net.layer})
    for name, params in net_params(net).items():
        fan_in = int(np.prod(params[0].shape[1:]))
        weights[name] = [(rng.standard_normal(params[0].shape) * np.sqrt(2 / fan_in))
                         .astype(np.float32)]
        weights[name] += [(0.1 * rng.standard_normal(p.shape)).astype(np.float32)
                          for p in params[1:]]
    weights.types = {k: v for k, v in weights.types.items() if k in weights}
    return weights


@pytest.fixture(scope="module")
def vgg_source(tmp_path_factory):
    """A width-scaled VGG16 classifier in the legacy V1 format, loaded back."""
    net = vgg16(width=WIDTH)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.caffemodel"
    save_weights(path, random_weights(net), net=net, legacy=True)
    return load_weights(path)


def test_fcn32s_report(vgg_source):
    target = fcn_vgg16("deploy", "32s", width=WIDTH)
    weights, report = transplant(target, vgg_source, seed=1)
    copied = {e.layer for e in report.by_action("copied")}
    assert copied == {f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1)
                      for i in range(1, n + 1)} | {"fc6", "fc7"}
    fc6 = report.find("fc6")
    assert (fc6.action, fc6.from_shape, fc6.shape) == ("coerced", (256, 1568), (256, 32, 7, 7))
    assert report.find("fc7").from_shape == (256, 256) and report.find("fc7").shape == (256, 256, 1, 1)
    assert report.find("fc6", 1).action == "copied"  # bias 256 -> 256
    assert [(e.layer, e.index) for e in report.by_action("dropped")] == [("fc8", 0), ("fc8", 1)]
    assert [(e.layer, e.index) for e in report.by_action("init")] == [
        ("score_fr", 0), ("score_fr", 1), ("upscore", 0)]
    assert np.array_equal(weights["fc6"][0], vgg_source["fc6"][0].reshape(256, 32, 7, 7))
    assert np.array_equal(weights["conv3_2"][1], vgg_source["conv3_2"][1])
    assert not weights["score_fr"][0].any()  # no filler in the prototxt: Caffe's constant 0
    assert list(weights) == list(param_shapes(target))
    assert "coerced  fc6[0]" in str(report) and "dropped 2 blobs (257,000 values)" in str(report)


def test_legacy_v1_target_net(vgg_source):
    """A target written in the V1 format (net-level input_dim, `layers`) is upgraded first."""
    from surgery.classifiers import fully_convolutional
    from netgen.legacy import downgrade_net
    target = downgrade_net(fully_convolutional(vgg16(width=WIDTH)))
    assert target.layers and list(target.input_dim) == [10, 3, 224, 224]
    weights, report = transplant(target, vgg_source)
    assert report.find("fc8").action == "coerced" and not report.by_action("init")
    assert weights.net.layer[0].type == "Input"


def test_alexnet_report(tmp_path):
    net = caffenet(width=1 / 8)
    source = random_weights(net)
    weights, report = transplant(fcn_alexnet("deploy", width=1 / 8), source)
    fc6 = report.find("fc6")
    assert fc6.from_shape == (512, 32 * 6 * 6) and fc6.shape == (512, 32, 6, 6)
    assert report.find("conv2").shape == (32, 6, 5, 5)  # group 2: Cin / 2
    assert report.find("upscore").shape == (21, 21, 63, 63)


def test_full_size_shapes_without_weights():
    """The published sizes: VGG16 fc6 4096x25088 -> 4096x512x7x7, AlexNet 4096x9216 -> 4096x256x6x6."""
    fcn = param_shapes(fcn_vgg16("deploy"))
    cls = param_shapes(vgg16())
    assert cls["fc6"][0] == (4096, 25088) and fcn["fc6"][0] == (4096, 512, 7, 7)
    assert cls["fc7"][0] == (4096, 4096) and fcn["fc7"][0] == (4096, 4096, 1, 1)
    assert param_shapes(caffenet())["fc6"][0] == (4096, 9216)
    assert param_shapes(fcn_alexnet("deploy"))["fc6"][0] == (4096, 256, 6, 6)


def test_suffix_extra_blobs_and_seeded_fillers():
    net = caffe_pb2.NetParameter()
    data = net.layer.add(name="input", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, 3, 10, 10])
    for name, bias in (("conv1_hha", False), ("new", True)):
        conv = net.layer.add(name=name, type="Convolution", bottom=["data"], top=[name])
        conv.convolution_param.num_output = 4
        conv.convolution_param.kernel_size.append(3)
        conv.convolution_param.bias_term = bias
        conv.convolution_param.weight_filler.CopyFrom(Filler(type="gaussian", std=0.01))
    source = Weights(conv1=[np.ones((4, 3, 3, 3), np.float32), np.ones(4, np.float32)])
    weights, report = transplant(net, source, suffix="_hha", seed=5)
    assert report.find("conv1_hha").source == "conv1"
    assert np.array_equal(weights["conv1_hha"][0], source["conv1"][0])
    assert [(e.layer, e.index, e.note) for e in report.by_action("dropped")] == [
        ("conv1", 1, "target layer 'conv1_hha' has 1 blobs")]
    new = weights["new"][0]
    assert new.std() == pytest.approx(0.01, rel=0.35) and new.any()
    assert np.array_equal(new, transplant(net, source, suffix="_hha", seed=5)[0]["new"][0])
    assert not np.array_equal(new, transplant(net, source, suffix="_hha", seed=6)[0]["new"][0])
    assert not weights["new"][1].any()
    assert report.find("new").note == "gaussian std 0.01 filler"


def test_element_count_mismatch_names_layer_and_shapes(vgg_source):
    target = fcn_vgg16("deploy", "32s", width=2 * WIDTH)
    with pytest.raises(FcnkitError, match=r"layer 'conv1_1' param 0: source shape 4x3x3x3 "
                                          r"\(108 values\) cannot fill target layer 'conv1_1' "
                                          r"shape 8x3x3x3"):
        transplant(target, vgg_source)


def test_python_data_layers_and_input_channels(vgg_source):
    data = DataSpec("SBDDSegDataLayer", {"sbdd_dir": "x", "split": "train"})
    train = fcn_vgg16("train", "32s", width=WIDTH, data=data)
    weights, report = transplant(train, vgg_source)  # 3 channels assumed
    assert report.find("conv1_1").action == "copied"
    with pytest.raises(FcnkitError, match=r"conv1_1.*4x3x3x3.*4x4x3x3"):
        transplant(train, vgg_source, input_channels=4)
    nyud = fcn_vgg16("train", "32s", width=WIDTH, inputs=(("color", 3), ("depth", 1)),
                     data=DataSpec("NYUDSegDataLayer", {"nyud_dir": "x"}))
    shapes = param_shapes(nyud, input_channels={"color": 3, "depth": 1})
    assert shapes["conv1_1"][0] == (4, 4, 3, 3)


def test_inner_product_after_data_layer_needs_a_size():
    net = caffe_pb2.NetParameter()
    net.layer.add(name="data", type="Python", top=["data"])
    fc = net.layer.add(name="fc", type="InnerProduct", bottom=["data"], top=["fc"])
    fc.inner_product_param.num_output = 2
    with pytest.raises(FcnkitError, match="layer 'fc': its parameter shapes depend on the input"):
        param_shapes(net)
    assert param_shapes(net, input_size=(4, 5))["fc"][0] == (2, 60)


def test_stage_init_32s_16s_8s(vgg_source, tmp_path):
    w32, _ = transplant(fcn_vgg16("deploy", "32s", width=WIDTH), vgg_source)
    rng = np.random.default_rng(2)  # pretend FCN-32s was trained: every parameter non-zero
    for arrays in w32.values():
        for i, a in enumerate(arrays):
            arrays[i] = a + rng.standard_normal(a.shape).astype(np.float32)
    net16 = fcn_vgg16("deploy", "16s", width=WIDTH)
    w16, report = stage_init(w32, net16)
    for name in ("conv1_1", "fc6", "fc7", "score_fr"):
        assert all(np.array_equal(a, b) for a, b in zip(w16[name], w32[name]))
        assert report.find(name).action == "copied"
    assert not any(a.any() for a in w16["score_pool4"])
    assert report.find("score_pool4").note == "zero (new scoring layer)"
    for name in ("upscore2", "upscore16"):
        assert np.array_equal(w16[name][0], bilinear_weights(w16[name][0].shape))
        assert report.find(name).note == "set to bilinear"
    assert [e.layer for e in report.by_action("dropped")] == ["upscore"]
    net8 = fcn_vgg16("deploy", "8s", width=WIDTH)
    w16["score_pool4"] = [a + 1 for a in w16["score_pool4"]]  # trained 16s skip
    w8, report8 = stage_init(w16, net8)
    assert np.array_equal(w8["score_pool4"][0], w16["score_pool4"][0])
    assert not w8["score_pool3"][0].any()
    assert np.array_equal(w8["upscore8"][0], bilinear_weights((21, 21, 16, 16)))
    # run FCN-16s in OpenCV: the zero skip adds nothing, fuse_pool4 == upscore2
    proto, model = tmp_path / "16s.prototxt", tmp_path / "16s.caffemodel"
    write_prototxt(proto, net16)
    save_weights(model, stage_init(w32, net16)[0], net=net16)
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.setInput(rng.standard_normal((1, 3, 64, 64)).astype(np.float32))
    fuse, up2, score = cv.forward(["fuse_pool4", "upscore2", "score"])
    assert np.array_equal(fuse, up2) and up2.any() and score.shape == (1, 21, 64, 64)


def test_expand_score():
    rng = np.random.default_rng(0)
    w = Weights(score_fr=[rng.standard_normal((21, 8, 1, 1)).astype(np.float32),
                          rng.standard_normal(21).astype(np.float32)],
                upscore=[bilinear_weights((21, 21, 4, 4))],
                types={"score_fr": "Convolution", "upscore": "Deconvolution"})
    w.net = caffe_pb2.NetParameter()
    up = w.net.layer.add(name="upscore", type="Deconvolution")
    up.convolution_param.num_output = 21
    out = expand_score(w, "score_fr", 60)
    assert out["score_fr"][0].shape == (60, 8, 1, 1)
    assert np.array_equal(out["score_fr"][0][:21], w["score_fr"][0])
    assert not out["score_fr"][0][21:].any() and not out["score_fr"][1][21:].any()
    assert out["upscore"][0] is w["upscore"][0]  # other layers shared, not copied
    out = expand_score(out, "upscore", 60)
    assert np.array_equal(out["upscore"][0], bilinear_weights((60, 60, 4, 4)))
    assert out.net.layer[0].convolution_param.num_output == 60
    assert w.net.layer[0].convolution_param.num_output == 21  # the input is untouched
    gauss = expand_score(w, "score_fr", 30, filler=Filler(type="gaussian", std=0.5), seed=1)
    assert gauss["score_fr"][0][21:].any()
    assert np.array_equal(gauss["score_fr"][0][:21], w["score_fr"][0])
    small = expand_score(w, "score_fr", 5)
    assert np.array_equal(small["score_fr"][1], w["score_fr"][1][:5])
    with pytest.raises(FcnkitError, match="layer 'nope': not in the weights"):
        expand_score(w, "nope", 3)
    with pytest.raises(FcnkitError, match="must be positive"):
        expand_score(w, "score_fr", 0)
