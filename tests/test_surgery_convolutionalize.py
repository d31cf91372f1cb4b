"""Convolutionalisation is exact, checked against OpenCV's independent Caffe importer.

A classifier caffemodel is written by fcnkit in the legacy V1 format of the published
VGG16/CaffeNet files and run by OpenCV with the classifier deploy prototxt. Its weights are
transplanted into a fully convolutional net, saved, and run by OpenCV too.

Correspondences stated exactly:
* Full-size VGG16 (224x224) and CaffeNet (227x227) against the same net with each
  InnerProduct a Convolution of the same name (`fully_convolutional`): fed the same image the
  convolutional fc8 map is 1x1 and its cell (0, 0) is the classifier's fc8 vector.
* The FCN deploy nets themselves (FCN-32s, FCN-AlexNet) pad conv1 by 100 and score 21
  classes (score_fr is new, fc8 is dropped), so they cannot give fc8 scores. Their pad 100
  makes each conv layer see context beyond the image, so no cell equals the classifier on an
  unpadded image either. What holds exactly: the classifier with conv1 padded by 100 too, fed
  an image small enough that pool5 is the classifier's 7x7 (6x6), i.e. 26x26 for VGG16
  (26 + 2·100 - 2 = 224 after conv1_1) and 27x27 for AlexNet ((27 + 200 - 11) / 4 + 1 = 55
  after conv1), computes fc7 equal to the FCN's fc7 map, which is then 1x1: cell (0, 0).
  Those run width-scaled (1/8 of the channels) to stay fast; the transplant is the same code.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from netgen.fcn import fcn_alexnet, fcn_vgg16
from netgen.proto import caffe_pb2
from netgen.schema import write_prototxt
from surgery.caffemodel import Weights, load_weights, save_weights
from surgery.classifiers import caffenet, fully_convolutional, vgg16
from surgery.fillers import Filler, fill
from surgery.interp import interp
from surgery.shapes import net_params
from surgery.transplant import transplant


def random_classifier(net: caffe_pb2.NetParameter, seed: int) -> Weights:
    """MSRA-scaled weights keep activations O(1) through 16 layers; biases N(0, 0.1)."""
    rng = np.random.default_rng(seed)
    weights = Weights()
    for name, (w, b) in net_params(net).items():
        weights[name] = [fill(Filler(type="msra"), w.shape, rng),
                         fill(Filler(type="gaussian", std=0.1), b.shape, rng)]
    return weights


def opencv(tmp, name: str, net: caffe_pb2.NetParameter, model, image: np.ndarray, blob: str):
    proto = tmp / f"{name}.prototxt"
    write_prototxt(proto, net)
    cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv.setInput(image)
    return cv.forward(blob)


def assert_scores_equal(got: np.ndarray, expected: np.ndarray) -> None:
    scale = np.abs(expected).max()
    assert scale > 1e-3  # a real signal, not an all-zero net
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("build, size, fc6", [
    (vgg16, 224, ((4096, 25088), (4096, 512, 7, 7))),
    (caffenet, 227, ((4096, 9216), (4096, 256, 6, 6))),
])
def test_full_size_classifier_equals_its_convolutional_twin(tmp_path, build, size, fc6):
    net = build()
    model = tmp_path / "classifier.caffemodel"
    save_weights(model, random_classifier(net, 0), net=net, legacy=True)
    image = np.random.default_rng(1).uniform(-120, 120, (1, 3, size, size)).astype(np.float32)
    expected = opencv(tmp_path, "classifier", net, model, image, "fc8")
    assert expected.shape == (1, 1000)

    source = load_weights(model)
    assert source.net.layers and not source.net.layer  # V1, like the published files
    convnet = fully_convolutional(net)
    weights, report = transplant(convnet, source)
    coerced = {e.layer: (e.from_shape, e.shape) for e in report.by_action("coerced")}
    assert coerced["fc6"] == fc6
    assert coerced["fc7"] == ((4096, 4096), (4096, 4096, 1, 1))
    assert coerced["fc8"] == ((1000, 4096), (1000, 4096, 1, 1))
    assert not report.by_action("dropped") and not report.by_action("init")
    fcn_model = tmp_path / "convolutional.caffemodel"
    save_weights(fcn_model, weights)
    got = opencv(tmp_path, "convolutional", convnet, fcn_model, image, "fc8")
    assert got.shape == (1, 1000, 1, 1)
    assert_scores_equal(got[:, :, 0, 0], expected)


@pytest.mark.parametrize("family", ["vgg16", "alexnet"])
def test_fcn_deploy_net_matches_padded_classifier(tmp_path, family):
    width = 1 / 8
    if family == "vgg16":
        classifier, fcn, first, size = vgg16(width=width), fcn_vgg16("deploy", width=width), \
            "conv1_1", 26
    else:
        classifier, fcn, first, size = caffenet(width=width), fcn_alexnet("deploy", width=width), \
            "conv1", 27
    model = tmp_path / "classifier.caffemodel"
    save_weights(model, random_classifier(classifier, 2), net=classifier, legacy=True)
    padded = caffe_pb2.NetParameter()
    padded.CopyFrom(classifier)
    conv1 = next(layer for layer in padded.layer if layer.name == first)
    conv1.convolution_param.ClearField("pad")
    conv1.convolution_param.pad.append(100)
    image = np.random.default_rng(3).uniform(-120, 120, (1, 3, size, size)).astype(np.float32)
    expected = opencv(tmp_path, "padded", padded, model, image, "fc7")

    weights, report = transplant(fcn, load_weights(model))
    assert [e.layer for e in report.by_action("dropped")] == ["fc8", "fc8"]
    assert {e.layer for e in report.by_action("init")} == {"score_fr", "upscore"}
    interp(weights, fcn)
    fcn_model = tmp_path / "fcn.caffemodel"
    save_weights(fcn_model, weights)
    got = opencv(tmp_path, "fcn", fcn, fcn_model, image, "fc7")
    assert got.shape[2:] == (1, 1)
    assert_scores_equal(got[:, :, 0, 0], expected)
    score = opencv(tmp_path, "fcn", fcn, fcn_model, image, "score")
    assert score.shape == (1, 21, size, size)
