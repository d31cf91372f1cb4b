"""FCN topologies as compact NetSpec loops, and an OpenCV shape oracle, for the netgen tests.

The nets keep the reference geometry (kernels, strides, pads, crops) but take a `width` so the
OpenCV checks run on narrow channels; coordinate maps and shapes do not depend on widths.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
from google.protobuf import text_format

from netgen.coord_map import crop
from netgen.netspec import L, NetSpec, P
from netgen.proto import caffe_pb2
from netgen.shapes import param_shapes

VGG_STAGES = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def _conv_relu(bottom, nout, ks=3, stride=1, pad=1, group=1):
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad, group=group)
    return conv, L.ReLU(conv, in_place=True)


def _upscore(bottom, classes, ks, stride):
    return L.Deconvolution(bottom, convolution_param=dict(num_output=classes, kernel_size=ks,
                                                          stride=stride, bias_term=False))


def vgg_fcn(size=(500, 500), width=1.0, classes=21) -> NetSpec:
    """VGG16 trunk of FCN (conv1_1 pad 100, fc6 as 7x7 conv) up to score_fr."""
    w = lambda c: max(1, int(c * width))
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, *size]))
    bottom = n.data
    for i, (reps, nout) in enumerate(VGG_STAGES, 1):
        for r in range(1, reps + 1):
            n[f"conv{i}_{r}"], n[f"relu{i}_{r}"] = _conv_relu(bottom, w(nout), pad=100 if i == r == 1 else 1)
            bottom = n[f"relu{i}_{r}"]
        n[f"pool{i}"] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        bottom = n[f"pool{i}"]
    n.fc6, n.relu6 = _conv_relu(bottom, w(4096), ks=7, pad=0)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7, n.relu7 = _conv_relu(n.drop6, w(4096), ks=1, pad=0)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.score_fr = L.Convolution(n.drop7, num_output=classes, kernel_size=1, pad=0)
    return n


def fcn32s(size=(500, 500), width=1.0, classes=21) -> NetSpec:
    n = vgg_fcn(size, width, classes)
    n.upscore = _upscore(n.score_fr, classes, 64, 32)
    n.score = crop(n.upscore, n.data)
    return n


def fcn16s(size=(500, 500), width=1.0, classes=21) -> NetSpec:
    n = vgg_fcn(size, width, classes)
    n.upscore2 = _upscore(n.score_fr, classes, 4, 2)
    n.score_pool4 = L.Convolution(n.pool4, num_output=classes, kernel_size=1, pad=0)
    n.score_pool4c = crop(n.score_pool4, n.upscore2)
    n.fuse_pool4 = L.Eltwise(n.upscore2, n.score_pool4c, operation=P.Eltwise.SUM)
    n.upscore16 = _upscore(n.fuse_pool4, classes, 32, 16)
    n.score = crop(n.upscore16, n.data)
    return n


def fcn8s(size=(500, 500), width=1.0, classes=21) -> NetSpec:
    n = vgg_fcn(size, width, classes)
    n.upscore2 = _upscore(n.score_fr, classes, 4, 2)
    n.score_pool4 = L.Convolution(n.pool4, num_output=classes, kernel_size=1, pad=0)
    n.score_pool4c = crop(n.score_pool4, n.upscore2)
    n.fuse_pool4 = L.Eltwise(n.upscore2, n.score_pool4c, operation=P.Eltwise.SUM)
    n.upscore_pool4 = _upscore(n.fuse_pool4, classes, 4, 2)
    n.score_pool3 = L.Convolution(n.pool3, num_output=classes, kernel_size=1, pad=0)
    n.score_pool3c = crop(n.score_pool3, n.upscore_pool4)
    n.fuse_pool3 = L.Eltwise(n.upscore_pool4, n.score_pool3c, operation=P.Eltwise.SUM)
    n.upscore8 = _upscore(n.fuse_pool3, classes, 16, 8)
    n.score = crop(n.upscore8, n.data)
    return n


def fcn_alexnet(size=(500, 500), width=1.0, classes=21) -> NetSpec:
    """CaffeNet-style trunk (conv1 pad 100, LRN, groups) with a single k63 s32 upscore."""
    w = lambda c: max(2, int(c * width)) // 2 * 2
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, *size]))
    n.conv1, n.relu1 = _conv_relu(n.data, w(96), ks=11, stride=4, pad=100)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2, n.relu2 = _conv_relu(n.norm1, w(256), ks=5, pad=2, group=2)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
    n.conv3, n.relu3 = _conv_relu(n.norm2, w(384), pad=1)
    n.conv4, n.relu4 = _conv_relu(n.relu3, w(384), pad=1, group=2)
    n.conv5, n.relu5 = _conv_relu(n.relu4, w(256), pad=1, group=2)
    n.pool5 = L.Pooling(n.relu5, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.fc6, n.relu6 = _conv_relu(n.pool5, w(4096), ks=6, pad=0)
    n.fc7, n.relu7 = _conv_relu(n.relu6, w(4096), ks=1, pad=0)
    n.score_fr = L.Convolution(n.relu7, num_output=classes, kernel_size=1, pad=0)
    n.upscore = _upscore(n.score_fr, classes, 63, 32)
    n.score = crop(n.upscore, n.data)
    return n


def with_weights(net: caffe_pb2.NetParameter, blobs: dict[str, list[np.ndarray]] | None = None,
                 seed: int = 0) -> caffe_pb2.NetParameter:
    """A copy of `net` carrying weights: the given arrays, else random ones of param_shapes."""
    rng = np.random.default_rng(seed)
    model = caffe_pb2.NetParameter()
    model.CopyFrom(net)
    shapes = param_shapes(net)
    for layer in model.layer:
        arrays = (blobs or {}).get(layer.name) or [
            rng.standard_normal(s).astype(np.float32) for s in shapes.get(layer.name, [])]
        for a in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(a.shape)
            blob.data.extend(np.asarray(a, np.float32).ravel().tolist())
    return model


def opencv_net(net: caffe_pb2.NetParameter, blobs=None) -> cv2.dnn.Net:
    """Load `net` (with weights) through OpenCV's Caffe importer, from real files."""
    with tempfile.TemporaryDirectory() as d:
        proto, model = Path(d, "net.prototxt"), Path(d, "net.caffemodel")
        proto.write_text(text_format.MessageToString(net))
        model.write_bytes(with_weights(net, blobs).SerializeToString())
        cv_net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv_net.enableFusion(False)
    return cv_net


def opencv_shapes(net: caffe_pb2.NetParameter, input_shape) -> dict[str, tuple[int, ...]]:
    """Layer name -> first output shape as OpenCV computes it for the given input shape."""
    cv_net = opencv_net(net)
    ids, _, outs = cv_net.getLayersShapes([list(input_shape)])
    return {cv_net.getLayer(int(i)).name: tuple(int(d) for d in out[0])
            for i, out in zip(np.ravel(ids), outs)}
