"""The explain table: FCN-32s / FCN-AlexNet rows, published receptive fields, a brute-force
receptive field from autograd, layout, and input handling."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as tf

from fcn_topologies import fcn32s, fcn_alexnet
from netgen.errors import FcnkitError
from netgen.explain import HEADER, explain
from netgen.netspec import L, NetSpec, P
from netgen.proto import caffe_pb2
from netgen.schema import parse_prototxt


def _table(text: str) -> dict[str, dict[str, str]]:
    """Rows by layer name, cells cut at the header's column starts."""
    lines = text.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    assert [lines[0][a:b].strip() for a, b in zip(starts, starts[1:] + [None])] == list(HEADER)
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = dict(zip(HEADER, cells))
    return rows


def _fcn32s_with_loss():
    n = fcn32s(width=1 / 64)
    n.label = L.Input(shape=dict(dim=[1, 1, 500, 500]))
    n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(normalize=False, ignore_label=255))
    return n.to_proto()


def test_fcn32s_at_500():
    text = explain(_fcn32s_with_loss(), (500, 500))
    rows = _table(text)
    pick = lambda name, *cols: tuple(rows[name][c] for c in cols)
    cols = ("output", "scale", "shift", "offset", "rf", "jump")
    assert pick("data", *cols) == ("1x3x500x500", "1", "0", "", "1", "1")
    assert pick("conv1_1", "kernel", "stride", "pad", "dil", *cols) == \
        ("3", "1", "100", "1", "1x1x698x698", "1", "99", "", "3", "1")
    assert pick("pool1", "kernel", "stride", "output", "scale") == ("2", "2", "1x1x349x349", "1/2")
    assert pick("pool5", *cols) == ("1x8x22x22", "1/32", "167/64", "", "212", "32")
    assert pick("fc6", "kernel", *cols) == ("7", "1x64x16x16", "1/32", "-25/64", "", "404", "32")
    assert pick("upscore", "kernel", "stride", *cols) == \
        ("64", "32", "1x21x544x544", "1", "19", "", "436", "1")
    assert pick("score", *cols) == ("1x21x500x500", "1", "0", "19", "436", "1")
    assert pick("loss", *cols) == ("scalar", "-", "-", "", "-", "-")
    assert pick("label", "scale", "rf") == ("-", "-")
    assert list(rows) == [l.name for l in _fcn32s_with_loss().layer]


def test_table_is_aligned_and_narrow():
    text = explain(_fcn32s_with_loss(), (500, 500))
    lines = text.splitlines()
    header = lines[0]
    table = lines[1:lines.index("")]
    for name in HEADER[1:]:
        col = header.index(f"  {name}") + 2
        assert all(line[col - 1] == " " for line in table if len(line) > col)
    assert max(map(len, table)) < 120
    assert "scale, shift" in text


def test_fcn_alexnet_matches_published_fields():
    rows = _table(explain(fcn_alexnet(width=1 / 64).to_proto(), (500, 500)))
    # AlexNet receptive fields: conv1 11 (stride 4), pool1 19, conv2 51, pool2 67, pool5 195
    got = {name: (rows[name]["rf"], rows[name]["jump"]) for name in
           ("conv1", "pool1", "conv2", "pool2", "conv3", "pool5")}
    assert got == {"conv1": ("11", "4"), "pool1": ("19", "8"), "conv2": ("51", "8"),
                   "pool2": ("67", "16"), "conv3": ("99", "16"), "pool5": ("195", "32")}
    assert rows["score"]["offset"] == "18" and rows["upscore"]["shift"] == "18"
    assert rows["score"]["output"].endswith("x500x500")


def _support(grad: torch.Tensor) -> int:
    rows = torch.nonzero(grad.abs().sum(dim=1) > 0)
    return int(rows.max() - rows.min() + 1)


def test_receptive_field_matches_autograd():
    """A chain with stride, dilation, average pooling and two deconvolutions: the rf column is
    the widest input support of any output pixel away from the borders (ones weights)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 96, 96]))
    n.c1 = L.Convolution(n.data, kernel_size=3, stride=2, pad=1, num_output=1)
    n.p1 = L.Pooling(n.c1, kernel_size=3, stride=2, pool=P.Pooling.AVE)
    n.c2 = L.Convolution(n.p1, kernel_size=3, dilation=2, num_output=1)
    n.u1 = L.Deconvolution(n.c2, convolution_param=dict(num_output=1, kernel_size=4, stride=2))
    n.c3 = L.Convolution(n.u1, kernel_size=5, num_output=1)
    n.u2 = L.Deconvolution(n.c3, convolution_param=dict(num_output=1, kernel_size=3, stride=3))
    rows = _table(explain(n.to_proto(), (96, 96)))

    x = torch.zeros(1, 1, 96, 96, requires_grad=True)
    ones = lambda k: torch.ones(1, 1, k, k)
    blobs = {"c1": tf.conv2d(x, ones(3), stride=2, padding=1)}
    blobs["p1"] = tf.avg_pool2d(blobs["c1"], 3, 2, ceil_mode=True)
    blobs["c2"] = tf.conv2d(blobs["p1"], ones(3), dilation=2)
    blobs["u1"] = tf.conv_transpose2d(blobs["c2"], ones(4), stride=2)
    blobs["c3"] = tf.conv2d(blobs["u1"], ones(5))
    blobs["u2"] = tf.conv_transpose2d(blobs["c3"], ones(3), stride=3)
    for name, blob in blobs.items():
        assert rows[name]["output"] == "x".join(map(str, blob.shape))
        size = blob.shape[2]
        widest = 0
        for y in range(size // 2 - 6, size // 2 + 6):     # every phase of the deconvolutions
            (grad,) = torch.autograd.grad(blob[0, 0, y, size // 2], x, retain_graph=True)
            widest = max(widest, _support(grad[0, 0]))
        assert rows[name]["rf"] == str(widest), name


def test_multi_branch_union_and_non_spatial_rows():
    net = parse_prototxt("""
      layer { name: "data" type: "Input" top: "data" input_param { shape { dim: [1, 3, 9, 9] } } }
      layer { name: "a" type: "Convolution" bottom: "data" top: "a"
              convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
      layer { name: "b" type: "Convolution" bottom: "a" top: "b"
              convolution_param { num_output: 2 kernel_size: 5 pad: 2 } }
      layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
      layer { name: "gp" type: "Pooling" bottom: "sum" top: "gp"
              pooling_param { pool: AVE global_pooling: true } }
      layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
      layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc"
              inner_product_param { num_output: 4 } }
    """, caffe_pb2.NetParameter)
    rows = _table(explain(net, (9, 9)))
    assert (rows["sum"]["rf"], rows["sum"]["shift"]) == ("7", "0")
    assert rows["gp"]["kernel"] == "global" and rows["gp"]["rf"] == "-"
    assert rows["cat"]["output"] == "1x4x9x9" and rows["cat"]["scale"] == "-"
    assert rows["fc"]["output"] == "1x4"


def test_python_data_layer_and_phase():
    net = parse_prototxt("""
      layer { name: "data" type: "Python" top: "data" top: "label" include { phase: TRAIN }
              python_param { module: "voc_layers" layer: "VOCSegDataLayer" } }
      layer { name: "input" type: "Input" top: "data" include { phase: TEST }
              input_param { shape { dim: [1, 3, 100, 100] } } }
      layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
              convolution_param { num_output: 21 kernel_size: 3 stride: 2 } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss"
              include { phase: TRAIN } }
    """, caffe_pb2.NetParameter)
    test_rows = _table(explain(net, (33, 41)))
    assert list(test_rows) == ["input", "conv"] and test_rows["conv"]["output"] == "1x21x16x20"
    with pytest.raises(FcnkitError, match=r"layer loss \(SoftmaxWithLoss\): label"):
        explain(net, (33, 41), phase="TRAIN")     # the label is 33x41, the score 16x20
    net.layer[2].convolution_param.stride[0] = 1
    net.layer[2].convolution_param.pad.append(1)
    train_rows = _table(explain(net, (33, 41), phase="TRAIN"))
    assert train_rows["data"]["output"] == "1x3x33x41, 1x1x33x41"
    assert train_rows["loss"]["rf"] == "-"


def test_explain_errors():
    n = fcn32s((64, 64), width=1 / 64)
    net = n.to_proto()
    net.layer[-1].crop_param.offset[0] = 200
    with pytest.raises(FcnkitError, match=r"layer score \(Crop\): crop is out of bounds"):
        explain(net, (64, 64))
    with pytest.raises(FcnkitError, match="'nope'"):
        explain(n.to_proto(), (64, 64), data="nope")
    with pytest.raises(FcnkitError, match="no input blob"):
        explain(caffe_pb2.NetParameter(), (8, 8))


def test_legacy_net_input_keeps_its_channels():
    net = parse_prototxt("""
      input: "img" input_shape { dim: [2, 4, 10, 10] }
      layer { name: "pool" type: "Pooling" bottom: "img" top: "pool"
              pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
    """, caffe_pb2.NetParameter)
    rows = _table(explain(net, (7, 9)))
    assert rows["pool"]["output"] == "2x4x4x5"
    assert (rows["pool"]["scale"], rows["pool"]["shift"], rows["pool"]["rf"]) == ("1/2", "0", "3")
