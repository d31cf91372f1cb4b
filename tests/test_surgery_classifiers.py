"""surgery.classifiers: the committed deploy prototxts, published names and sizes, detection."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from netgen.schema import read_net, to_prototxt
from surgery.caffemodel import Weights
from surgery.classifiers import (CLASSIFIERS, caffenet, detect, fully_convolutional,
                                 prototxt_path, vgg16, write_prototxts)
from surgery.shapes import param_shapes


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_committed_prototxt_is_what_the_builder_makes(name, tmp_path):
    committed = prototxt_path(name)
    assert committed.read_text() == to_prototxt(CLASSIFIERS[name]())
    written = {p.name: p.read_text() for p in write_prototxts(tmp_path)}
    assert written[committed.name] == committed.read_text()
    assert read_net(committed) == CLASSIFIERS[name]()


def test_vgg16_names_and_size():
    net = vgg16()
    names = [layer.name for layer in net.layer]
    convs = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    expected = ["data"]
    for b, n in enumerate((2, 2, 3, 3, 3), 1):
        for i in range(1, n + 1):
            expected += [f"conv{b}_{i}", f"relu{b}_{i}"]
        expected.append(f"pool{b}")
    expected += ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8", "prob"]
    assert names == expected and net.name == "VGG_ILSVRC_16_layers"
    shapes = param_shapes(net)
    assert list(shapes) == convs + ["fc6", "fc7", "fc8"]
    assert sum(int(np.prod(s)) for v in shapes.values() for s in v) == 138_357_544
    relu = net.layer[2]
    assert relu.type == "ReLU" and list(relu.top) == list(relu.bottom) == ["conv1_1"]  # in place


def test_caffenet_names_and_size():
    net = caffenet()
    assert [layer.name for layer in net.layer] == [
        "data", "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3",
        "relu3", "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "drop6", "fc7",
        "relu7", "drop7", "fc8", "prob"]
    shapes = param_shapes(net)
    assert shapes["conv1"][0] == (96, 3, 11, 11) and shapes["conv2"][0] == (256, 48, 5, 5)
    assert shapes["conv4"][0] == (384, 192, 3, 3) and shapes["fc6"][0] == (4096, 9216)
    assert sum(int(np.prod(s)) for v in shapes.values() for s in v) == 60_965_224
    conv1 = net.layer[1].convolution_param
    assert list(conv1.stride) == [4] and not conv1.pad


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_opencv_reads_the_prototxts(name):
    cv = cv2.dnn.readNetFromCaffe(str(prototxt_path(name)))
    assert "fc8" in cv.getLayerNames()


def test_fully_convolutional():
    net = fully_convolutional(vgg16())
    fc6 = next(layer for layer in net.layer if layer.name == "fc6")
    assert fc6.type == "Convolution" and list(fc6.convolution_param.kernel_size) == [7]
    shapes = param_shapes(net)
    assert shapes["fc6"][0] == (4096, 512, 7, 7) and shapes["fc8"][0] == (1000, 4096, 1, 1)
    assert param_shapes(fully_convolutional(caffenet()))["fc6"][0] == (4096, 256, 6, 6)


def test_detect():
    def stub(net):
        return Weights((name, [np.zeros(shapes[0], np.float32)])
                       for name, shapes in param_shapes(net).items())
    assert detect(stub(vgg16(width=1 / 16))) == "vgg16"
    assert detect(stub(caffenet(width=1 / 16))) == "caffenet"
    vgg19 = stub(vgg16(width=1 / 16))
    vgg19["conv5_4"] = vgg19["conv5_3"]
    assert detect(vgg19) == "vgg19"
    assert detect(Weights(conv1=[np.zeros((8, 3, 3, 3))])) is None
