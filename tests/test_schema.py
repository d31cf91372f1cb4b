"""Schema facts (numbers, defaults) checked against Caffe, text/binary I/O and its errors,
coexistence with pycaffe's descriptor pool, and interoperability with OpenCV's Caffe reader."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from netgen import schema
from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2 as pb

REPO = Path(__file__).resolve().parents[1]


def number(message_type, field: str) -> int:
    return message_type.DESCRIPTOR.fields_by_name[field].number


# --------------------------------------------------------------------------- field numbers

FIELD_NUMBERS = [
    (pb.NetParameter, {"name": 1, "layers": 2, "input": 3, "input_dim": 4, "force_backward": 5,
                       "state": 6, "debug_info": 7, "input_shape": 8, "layer": 100}),
    (pb.V1LayerParameter, {"layer": 1, "bottom": 2, "top": 3, "name": 4, "type": 5, "blobs": 6,
                           "blobs_lr": 7, "weight_decay": 8, "convolution_param": 10,
                           "pooling_param": 19, "include": 32, "exclude": 33, "loss_weight": 35,
                           "transform_param": 36, "loss_param": 42, "param": 1001,
                           "blob_share_mode": 1002}),
    (pb.BlobProto, {"num": 1, "channels": 2, "height": 3, "width": 4, "data": 5, "diff": 6,
                    "shape": 7, "double_data": 8, "double_diff": 9}),
    (pb.BlobShape, {"dim": 1}),
    (pb.LayerParameter, {"name": 1, "type": 2, "bottom": 3, "top": 4, "loss_weight": 5,
                         "param": 6, "blobs": 7, "include": 8, "exclude": 9, "phase": 10,
                         "propagate_down": 11, "transform_param": 100, "loss_param": 101,
                         "accuracy_param": 102, "argmax_param": 103, "concat_param": 104,
                         "convolution_param": 106, "data_param": 107, "dropout_param": 108,
                         "eltwise_param": 110, "inner_product_param": 117, "lrn_param": 118,
                         "pooling_param": 121, "relu_param": 123, "softmax_param": 125,
                         "python_param": 130, "reshape_param": 133, "batch_norm_param": 139,
                         "scale_param": 142, "input_param": 143, "crop_param": 144,
                         "recurrent_param": 146, "swish_param": 147, "clip_param": 148}),
    (pb.SolverParameter, {"train_net": 1, "test_net": 2, "test_iter": 3, "test_interval": 4,
                          "base_lr": 5, "display": 6, "max_iter": 7, "lr_policy": 8, "gamma": 9,
                          "power": 10, "momentum": 11, "weight_decay": 12, "stepsize": 13,
                          "snapshot": 14, "snapshot_prefix": 15, "solver_mode": 17,
                          "random_seed": 20, "net": 24, "regularization_type": 29,
                          "solver_type": 30, "average_loss": 33, "stepvalue": 34,
                          "clip_gradients": 35, "iter_size": 36, "snapshot_format": 37,
                          "type": 40, "layer_wise_reduce": 41, "weights": 42}),
    (pb.SolverState, {"iter": 1, "learned_net": 2, "history": 3, "current_step": 4}),
    (pb.ParamSpec, {"name": 1, "share_mode": 2, "lr_mult": 3, "decay_mult": 4}),
    (pb.ConvolutionParameter, {"num_output": 1, "bias_term": 2, "pad": 3, "kernel_size": 4,
                               "group": 5, "stride": 6, "weight_filler": 7, "bias_filler": 8,
                               "engine": 15, "dilation": 18}),
    (pb.PoolingParameter, {"pool": 1, "kernel_size": 2, "stride": 3, "pad": 4,
                           "global_pooling": 12, "round_mode": 13}),
    (pb.CropParameter, {"axis": 1, "offset": 2}),
    (pb.LossParameter, {"ignore_label": 1, "normalize": 2, "normalization": 3}),
    (pb.PythonParameter, {"module": 1, "layer": 2, "param_str": 3, "share_in_parallel": 4}),
    (pb.V0LayerParameter, {"name": 1, "type": 2, "num_output": 3, "kernelsize": 8,
                           "blobs": 50, "blobs_lr": 51, "weight_decay": 52,
                           "hdf5_output_param": 1001}),
]


@pytest.mark.parametrize("message_type,numbers", FIELD_NUMBERS,
                         ids=[m.DESCRIPTOR.name for m, _ in FIELD_NUMBERS])
def test_field_numbers(message_type, numbers):
    assert {f: number(message_type, f) for f in numbers} == numbers


def test_v1_layer_type_enum():
    expected = {"NONE": 0, "ACCURACY": 1, "CONCAT": 3, "CONVOLUTION": 4, "DATA": 5,
                "DROPOUT": 6, "FLATTEN": 8, "INNER_PRODUCT": 14, "LRN": 15, "POOLING": 17,
                "RELU": 18, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "ELTWISE": 25,
                "SILENCE": 36, "DECONVOLUTION": 39}
    enum = pb.V1LayerParameter.LayerType
    assert {k: enum.Value(k) for k in expected} == expected
    assert len(enum.keys()) == 40


def test_enums():
    assert pb.Phase.Value("TRAIN") == 0 and pb.Phase.Value("TEST") == 1
    assert dict(pb.LossParameter.NormalizationMode.items()) == {
        "FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3}
    assert dict(pb.SolverParameter.SnapshotFormat.items()) == {"HDF5": 0, "BINARYPROTO": 1}
    assert dict(pb.SolverParameter.SolverMode.items()) == {"CPU": 0, "GPU": 1}
    assert pb.SolverParameter.SolverType.Value("ADAM") == 5
    assert dict(pb.EltwiseParameter.EltwiseOp.items()) == {"PROD": 0, "SUM": 1, "MAX": 2}
    assert dict(pb.ReductionParameter.ReductionOp.items()) == {
        "SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4}


def test_file_identity():
    assert pb.DESCRIPTOR.name == "fcnkit_caffe.proto"
    assert pb.DESCRIPTOR.package == "fcnkit.caffe"
    assert pb.NetParameter.DESCRIPTOR.full_name == "fcnkit.caffe.NetParameter"


def test_packed_and_labels():
    blob = pb.BlobProto.DESCRIPTOR.fields_by_name
    shape = pb.BlobShape.DESCRIPTOR.fields_by_name["dim"]
    assert shape.is_packed and shape.type == shape.TYPE_INT64
    for f in ("data", "diff", "double_data", "double_diff"):
        assert blob[f].is_packed, f
    assert blob["num"].type == blob["num"].TYPE_INT32
    # Non-packed repeated scalars stay unpacked (proto2 default), as in Caffe.
    assert not pb.LayerParameter.DESCRIPTOR.fields_by_name["loss_weight"].is_packed
    assert not pb.V1LayerParameter.DESCRIPTOR.fields_by_name["blobs_lr"].is_packed
    clip = pb.ClipParameter.DESCRIPTOR.fields_by_name
    assert clip["min"].is_required and clip["max"].is_required
    # Exact wire bytes: dim 1 packed = tag 0x0a, len, varints.
    assert pb.BlobShape(dim=[1, 300]).SerializeToString() == b"\x0a\x03\x01\xac\x02"


# --------------------------------------------------------------------------- defaults

def test_defaults():
    conv = pb.ConvolutionParameter()
    assert conv.bias_term is True and conv.group == 1 and conv.axis == 1
    pool = pb.PoolingParameter()
    assert pool.pool == pb.PoolingParameter.MAX and pool.stride == 1 and pool.pad == 0
    assert pool.round_mode == pb.PoolingParameter.CEIL
    assert pb.CropParameter().axis == 2
    assert pb.LossParameter().normalization == pb.LossParameter.VALID
    assert pb.DropoutParameter().dropout_ratio == 0.5
    lrn = pb.LRNParameter()
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k) == (5, 1.0, 0.75, 1.0)
    assert lrn.norm_region == pb.LRNParameter.ACROSS_CHANNELS
    spec = pb.ParamSpec()
    assert spec.lr_mult == 1.0 and spec.decay_mult == 1.0
    assert pb.NetState().phase == pb.TEST
    filler = pb.FillerParameter()
    assert filler.type == "constant" and filler.std == 1.0 and filler.sparse == -1
    solver = pb.SolverParameter()
    assert solver.type == "SGD" and solver.iter_size == 1 and solver.average_loss == 1
    assert solver.clip_gradients == -1 and solver.random_seed == -1
    assert solver.solver_mode == pb.SolverParameter.GPU
    assert solver.snapshot_format == pb.SolverParameter.BINARYPROTO
    assert solver.regularization_type == "L2" and solver.test_initialization is True
    assert solver.momentum2 == pytest.approx(0.999) and solver.delta == pytest.approx(1e-8)
    assert pb.EltwiseParameter().operation == pb.EltwiseParameter.SUM
    assert pb.SoftmaxParameter().axis == 1
    assert pb.PythonParameter().param_str == ""
    assert pb.InnerProductParameter().bias_term is True
    assert pb.BatchNormParameter().eps == pytest.approx(1e-5)
    assert pb.ReshapeParameter().num_axes == -1
    assert pb.DataParameter().prefetch == 4
    v0 = pb.V0LayerParameter()
    assert v0.biasterm is True and v0.det_crop_mode == "warp" and v0.concat_dim == 1


# --------------------------------------------------------------------------- text I/O

NET_TEXT = textwrap.dedent("""\
    name: "tiny"
    layer {
      name: "data"
      type: "Input"
      top: "data"
      input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } }
    }
    layer {
      name: "score"
      type: "Convolution"
      bottom: "data"
      top: "score"
      param { lr_mult: 1 decay_mult: 1 }
      param { lr_mult: 2 decay_mult: 0 }
      convolution_param { num_output: 21 kernel_size: 1 pad: 0
        weight_filler { type: "xavier" } engine: CAFFE }
    }
    layer {
      name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
      loss_param { ignore_label: 255 normalize: false }
      include { phase: TRAIN }
    }
    """)


def test_text_round_trip(tmp_path):
    net = schema.parse_prototxt(NET_TEXT, pb.NetParameter, "net.prototxt")
    assert [l.name for l in net.layer] == ["data", "score", "loss"]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    assert net.layer[1].param[1].lr_mult == 2
    assert net.layer[2].loss_param.HasField("normalize")
    assert net.layer[2].include[0].phase == pb.TRAIN
    text = schema.to_prototxt(net)
    assert schema.parse_prototxt(text, pb.NetParameter) == net
    path = tmp_path / "net.prototxt"
    schema.write_prototxt(path, net)
    assert path.read_text() == text
    assert schema.read_net(path) == net
    assert not list(tmp_path.glob(".*.tmp"))


def test_to_prototxt_layout():
    layer = pb.LayerParameter(name="c", type="Convolution", bottom=["x"], top=["c"])
    layer.convolution_param.num_output = 4
    layer.convolution_param.kernel_size.append(3)
    net = pb.NetParameter(name="n")
    net.layer.add().CopyFrom(layer)
    assert schema.to_prototxt(net) == (
        'name: "n"\nlayer {\n  name: "c"\n  type: "Convolution"\n  bottom: "x"\n'
        '  top: "c"\n  convolution_param {\n    num_output: 4\n    kernel_size: 3\n  }\n}\n')


def test_solver_text(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('train_net: "train.prototxt"\ntest_net: "val.prototxt"\ntest_iter: 736\n'
                    'test_interval: 999999999\nbase_lr: 1e-10\nlr_policy: "fixed"\n'
                    'momentum: 0.99\nweight_decay: 0.0005\niter_size: 1\nmax_iter: 100000\n'
                    'snapshot: 4000\nsnapshot_prefix: "snapshot/train"\ntest_initialization: false\n'
                    'solver_mode: GPU\n')
    solver = schema.read_solver(path)
    assert solver.base_lr == pytest.approx(1e-10) and solver.momentum == pytest.approx(0.99)
    assert list(solver.test_iter) == [736] and solver.test_initialization is False
    assert schema.parse_prototxt(schema.to_prototxt(solver), pb.SolverParameter) == solver


@pytest.mark.parametrize("text,line,col,what", [
    ('name: "x"\nlayer {\n  name: "a"\n  bogus: 1\n}\n', 4, 3, 'no field named "bogus"'),
    ('layer {\n  name: "a"\n', 2, None, 'Expected "}"'),  # at the last token
    ('layer {\n  type: 3\n}\n', 2, 9, "Expected string"),
    ('layer { convolution_param { engine: FAST } }', 1, None, "has no value named FAST"),
    ('name: "a"\nname: "b"\n', 2, None, 'multiple "name" fields'),
    ('layer { annotated_data_param { } }', 1, None, 'no field named "annotated_data_param"'),
])
def test_text_errors_name_file_line_col(text, line, col, what):
    with pytest.raises(FcnkitError) as info:
        schema.parse_prototxt(text, pb.NetParameter, "bad.prototxt")
    msg = str(info.value)
    m = re.match(r"bad\.prototxt:(\d+):(\d+): (.*)$", msg)
    assert m, msg
    assert int(m.group(1)) == line
    if col is not None:
        assert int(m.group(2)) == col
    assert what in m.group(3)
    assert "fcnkit.caffe" not in msg and "\n" not in msg


def test_text_error_reads_like_caffe_type_names():
    with pytest.raises(FcnkitError, match=r'Message type "LayerParameter" has no field named "x"'):
        schema.parse_prototxt("layer { x: 1 }", pb.NetParameter)


def test_missing_required_field():
    with pytest.raises(FcnkitError, match=r"clip\.prototxt: missing required field\(s\): .*max"):
        schema.parse_prototxt("clip_param { min: 0 }", pb.LayerParameter, "clip.prototxt")


def test_read_errors(tmp_path):
    with pytest.raises(FcnkitError, match=re.escape(str(tmp_path / "nope.prototxt"))):
        schema.read_net(tmp_path / "nope.prototxt")
    with pytest.raises(FcnkitError, match="is a folder"):
        schema.read_net(tmp_path)
    binary = tmp_path / "w.caffemodel"
    binary.write_bytes(b"\x0a\x02\xff\xfe" + bytes(range(256)))
    with pytest.raises(FcnkitError, match=r"w\.caffemodel: not UTF-8"):
        schema.read_net(binary)


def test_write_into_missing_folder_leaves_nothing(tmp_path):
    with pytest.raises(FcnkitError, match="does not exist"):
        schema.write_prototxt(tmp_path / "missing" / "net.prototxt", pb.NetParameter(name="x"))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- binary I/O

def _model() -> pb.NetParameter:
    net = pb.NetParameter(name="m")
    layer = net.layer.add(name="conv1", type="Convolution")
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 1, 3, 3])
    blob.data.extend(np.arange(18, dtype=np.float32) / 7)
    return net


def test_binary_round_trip(tmp_path):
    net = _model()
    path = tmp_path / "m.caffemodel"
    schema.write_binary(path, net)
    back = schema.read_binary(path, pb.NetParameter)
    assert back == net
    assert np.array_equal(np.array(back.layer[0].blobs[0].data, np.float32),
                          np.arange(18, dtype=np.float32) / 7)
    assert path.read_bytes() == net.SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_unknown_binary_fields_survive_round_trip(tmp_path):
    # A fork's extra field inside a layer (LayerParameter 200, length-delimited) and an
    # unknown varint at the top level (NetParameter 999 = 12345).
    extra_layer_field = _varint(200 << 3 | 2) + _varint(3) + b"\x08\x96\x01"
    layer_bytes = pb.LayerParameter(name="fork").SerializeToString() + extra_layer_field
    top_unknown = _varint(999 << 3 | 0) + _varint(12345)
    data = (pb.NetParameter(name="n").SerializeToString()
            + _varint(100 << 3 | 2) + _varint(len(layer_bytes)) + layer_bytes + top_unknown)
    net = schema.parse_binary(data, pb.NetParameter, "fork.caffemodel")
    assert net.name == "n" and net.layer[0].name == "fork"
    out = net.SerializeToString()
    assert extra_layer_field in out and top_unknown in out
    path = tmp_path / "again.caffemodel"
    schema.write_binary(path, net)
    assert schema.read_binary(path, pb.NetParameter).SerializeToString() == out
    # Editing a known field keeps the unknown ones.
    net.layer[0].name = "renamed"
    assert extra_layer_field in net.SerializeToString()


def test_binary_errors():
    good = _model().SerializeToString()
    with pytest.raises(FcnkitError, match=r"cut\.caffemodel: not a valid binary NetParameter"):
        schema.parse_binary(good[:-5], pb.NetParameter, "cut.caffemodel")
    for text in (NET_TEXT, "# a comment\nname: 'x'\n", "input: \"data\"\ninput_dim: 1\n"):
        with pytest.raises(FcnkitError, match=r"x\.caffemodel: looks like a text prototxt"):
            schema.parse_binary(text.encode(), pb.NetParameter, "x.caffemodel")
    clip = pb.LayerParameter(name="c")
    clip.clip_param.min = 0  # max missing: serialise partially, as a broken writer would
    with pytest.raises(FcnkitError, match=r"p\.bin: missing required field"):
        schema.parse_binary(clip.SerializePartialToString(), pb.LayerParameter, "p.bin")


def test_binary_missing_file(tmp_path):
    with pytest.raises(FcnkitError, match=re.escape(str(tmp_path / "w.caffemodel"))):
        schema.read_binary(tmp_path / "w.caffemodel", pb.NetParameter)


# --------------------------------------------------------------------------- coexistence

COEXIST = textwrap.dedent("""
    import sys
    from google.protobuf import descriptor_pool
    sys.path.insert(0, sys.argv[1])
    from tests.schema_foreign_proto import register_caffe_proto
    if sys.argv[2] == "before":
        assert "netgen.proto.fcnkit_caffe_pb2" not in sys.modules
        TheirNet = register_caffe_proto(descriptor_pool.Default())
    from netgen import schema
    from netgen.proto import caffe_pb2
    if sys.argv[2] == "after":
        TheirNet = register_caffe_proto(descriptor_pool.Default())
    ours = schema.parse_prototxt('name: "ours"', caffe_pb2.NetParameter)
    theirs = TheirNet(name="theirs")
    assert TheirNet.FromString(ours.SerializeToString()).name == "ours"
    assert caffe_pb2.NetParameter.FromString(theirs.SerializeToString()).name == "theirs"
    pool = descriptor_pool.Default()
    assert pool.FindMessageTypeByName("caffe.NetParameter").file.name == "caffe.proto"
    assert pool.FindMessageTypeByName("fcnkit.caffe.NetParameter").file.name == "fcnkit_caffe.proto"
    print("ok")
""")


@pytest.mark.parametrize("order", ["before", "after"])
def test_coexists_with_pycaffe_caffe_proto(order):
    """pycaffe's caffe_pb2 registers 'caffe.proto' (package caffe) in the default pool;
    ours must load beside it in either order. Run in a fresh interpreter so the default
    pool of the test process stays untouched."""
    done = subprocess.run([sys.executable, "-c", COEXIST, str(REPO), order], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --------------------------------------------------------------------------- OpenCV interop

def _conv_net() -> pb.NetParameter:
    net = pb.NetParameter(name="one_conv")
    data = net.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, 2, 5, 6])
    conv = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    conv.convolution_param.num_output = 3
    conv.convolution_param.kernel_size.append(3)
    conv.convolution_param.pad.append(1)
    return net


def _numpy_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Cross-correlation, stride 1, NCHW: the computation Caffe's Convolution layer performs."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    h, wd = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    windows = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    out = np.einsum("nchwij,ocij->nohw", windows[:, :, :h, :wd], w)
    return out + b[None, :, None, None]


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "v1_layers"])
def test_opencv_reads_our_files(tmp_path, legacy):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)

    proto = tmp_path / "deploy.prototxt"
    schema.write_prototxt(proto, _conv_net())
    weights = pb.NetParameter(name="one_conv")
    if legacy:
        # Old published caffemodels: V1 `layers` with enum type and 4-D legacy blob dims.
        layer = weights.layers.add(name="conv", type=pb.V1LayerParameter.CONVOLUTION)
        wb = layer.blobs.add(num=3, channels=2, height=3, width=3)
        bb = layer.blobs.add(num=1, channels=1, height=1, width=3)
    else:
        layer = weights.layer.add(name="conv", type="Convolution")
        wb = layer.blobs.add()
        wb.shape.dim.extend(w.shape)
        bb = layer.blobs.add()
        bb.shape.dim.append(3)
    wb.data.extend(w.ravel())
    bb.data.extend(b)
    model = tmp_path / "w.caffemodel"
    schema.write_binary(model, weights)

    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.setInput(x)
    got = net.forward()
    np.testing.assert_allclose(got, _numpy_conv(x, w, b, pad=1), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- generated code

def test_regenerated_module_matches_committed(tmp_path):
    pytest.importorskip("grpc_tools")
    from netgen.proto import regenerate

    fresh = regenerate.generate(tmp_path).read_bytes()
    committed = (REPO / "netgen" / "proto" / "fcnkit_caffe_pb2.py").read_bytes()
    version = re.compile(rb"# Protobuf Python Version: (\S+)")
    fresh_v, committed_v = version.search(fresh).group(1), version.search(committed).group(1)
    if fresh_v != committed_v:
        pytest.skip(f"installed protoc is {fresh_v.decode()}, committed code from "
                    f"{committed_v.decode()}; run python -m netgen.proto.regenerate")
    assert fresh == committed, "fcnkit_caffe.proto changed: run python -m netgen.proto.regenerate"


def test_regenerate_cli_rejects_arguments(capsys):
    from netgen.proto import regenerate

    with pytest.raises(SystemExit) as info:
        regenerate.main(["--bogus"])
    assert info.value.code == 2
    assert "takes no arguments" in capsys.readouterr().err
