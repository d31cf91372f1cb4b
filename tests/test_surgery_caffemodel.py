"""surgery.caffemodel: our wire codec against protobuf's, round trips, OpenCV, bad files."""
from __future__ import annotations

import struct

import cv2
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2
from netgen.schema import write_prototxt
from surgery import wire
from surgery.caffemodel import Weights, load_weights, load_weights_for, save_weights
from surgery.classifiers import vgg16
from netgen.legacy import upgrade_net


def _small_net() -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter(name="tiny")
    data = net.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add(dim=[1, 3, 8, 8])
    conv = net.layer.add(name="conv1", type="Convolution", bottom=["data"], top=["conv1"])
    conv.convolution_param.num_output = 4
    conv.convolution_param.kernel_size.append(3)
    conv.convolution_param.pad.append(1)
    conv.param.add(lr_mult=1, decay_mult=1)
    conv.param.add(lr_mult=2, decay_mult=0)
    net.layer.add(name="relu1", type="ReLU", bottom=["conv1"], top=["conv1"])
    pool = net.layer.add(name="pool1", type="Pooling", bottom=["conv1"], top=["pool1"])
    pool.pooling_param.kernel_size = 2
    pool.pooling_param.stride = 2
    fc = net.layer.add(name="fc", type="InnerProduct", bottom=["pool1"], top=["fc"])
    fc.inner_product_param.num_output = 5
    return net


def _small_weights(seed: int = 0) -> Weights:
    rng = np.random.default_rng(seed)
    shapes = {"conv1": [(4, 3, 3, 3), (4,)], "fc": [(5, 64), (5,)]}
    w = Weights(types={"conv1": "Convolution", "fc": "InnerProduct"})
    for name, blob_shapes in shapes.items():
        w[name] = [rng.standard_normal(s).astype(np.float32) for s in blob_shapes]
    return w


def _protobuf_net(weights: Weights, net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """What Caffe's Net::ToProto writes, built with protobuf itself."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for layer in out.layer:
        for array in weights.get(layer.name, []):
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(array.reshape(-1).tolist())
    return out


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_same_weights(a: Weights, b: Weights) -> None:
    assert list(a) == list(b)
    for name in a:
        assert len(a[name]) == len(b[name]), name
        for x, y in zip(a[name], b[name]):
            assert x.shape == y.shape, name
            assert np.array_equal(_bits(x), _bits(y)), name


# ------------------------------------------------------------------ codec vs protobuf

def test_written_bytes_equal_protobuf_serialization(tmp_path):
    net, weights = _small_net(), _small_weights()
    path = tmp_path / "m.caffemodel"
    save_weights(path, weights, net=net)
    assert path.read_bytes() == _protobuf_net(weights, net).SerializeToString()


def test_reading_protobuf_written_file_is_bit_identical(tmp_path):
    net, weights = _small_net(), _small_weights()
    path = tmp_path / "m.caffemodel"
    path.write_bytes(_protobuf_net(weights, net).SerializeToString())
    loaded = load_weights(path)
    assert_same_weights(loaded, weights)
    assert loaded.types == {"conv1": "Convolution", "fc": "InnerProduct"}
    assert loaded.net == net  # layer definitions kept, blobs stripped
    assert not loaded.legacy


def test_legacy_v1_matches_protobuf_parse(tmp_path):
    net, weights = _small_net(), _small_weights()
    path = tmp_path / "v1.caffemodel"
    save_weights(path, weights, net=net, legacy=True)
    parsed = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert path.read_bytes() == parsed.SerializeToString()
    assert not parsed.layer and [v.name for v in parsed.layers] == ["conv1", "relu1", "pool1", "fc"]
    assert list(parsed.input) == ["data"] and list(parsed.input_dim) == [1, 3, 8, 8]
    conv = parsed.layers[0]
    assert conv.type == caffe_pb2.V1LayerParameter.CONVOLUTION
    assert list(conv.blobs_lr) == [1, 2] and list(conv.weight_decay) == [1, 0]
    fc_w = parsed.layers[3].blobs[0]
    assert (fc_w.num, fc_w.channels, fc_w.height, fc_w.width) == (1, 1, 5, 64)
    assert not fc_w.HasField("shape")
    assert np.array_equal(np.array(fc_w.data, np.float32), weights["fc"][0].reshape(-1))
    loaded = load_weights(path)  # the stored definitions give the real shapes back
    assert loaded.types == {"conv1": "Convolution", "fc": "InnerProduct"}
    assert not loaded.legacy
    assert_same_weights(loaded, weights)
    bare = tmp_path / "bare.caffemodel"  # no definitions: the 4-d dims stay, flagged
    save_weights(bare, weights, legacy=True)
    loaded = load_weights(bare)
    assert loaded["fc"][0].shape == (1, 1, 5, 64) and loaded["fc"][1].shape == (1, 1, 1, 5)
    assert ("fc", 0) in loaded.legacy and ("conv1", 0) in loaded.legacy
    assert np.array_equal(_bits(loaded["fc"][0].reshape(5, 64)), _bits(weights["fc"][0]))
    current = tmp_path / "current.caffemodel"  # and stay legacy dims in the current format
    save_weights(current, loaded)
    blob = caffe_pb2.NetParameter.FromString(current.read_bytes()).layer[1].blobs[0]
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 1, 5, 64)
    assert load_weights(current).legacy == loaded.legacy


def test_legacy_save_of_a_filtered_net_drops_run_time_phase(tmp_path):
    """A net that went through phase filtering (layers carry `phase`) still saves as V1."""
    from netgen.netstate import filter_net, make_state
    net, weights = _small_net(), _small_weights()
    filtered = filter_net(net, make_state("TEST"))
    assert all(layer.HasField("phase") for layer in filtered.layer)
    path = tmp_path / "v1.caffemodel"
    save_weights(path, weights, net=filtered, legacy=True)
    parsed = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert [v.name for v in parsed.layers] == ["conv1", "relu1", "pool1", "fc"]


def _blob_bytes(fields: list[bytes]) -> bytes:
    return b"".join(fields)


def _layer_bytes(name: str, blobs: list[bytes], v1: bool = False) -> bytes:
    name_field, blob_field, layer_field = (4, 6, 2) if v1 else (1, 7, 100)
    body = wire.encode_len_field(name_field, name.encode())
    body += b"".join(wire.encode_len_field(blob_field, b) for b in blobs)
    return wire.encode_len_field(layer_field, body)


def test_unpacked_double_and_split_payloads(tmp_path):
    """Encodings protobuf accepts besides packed floats: unpacked floats, doubles, split runs."""
    values = np.array([1.5, -2.25, 3.0, 1e-30, np.float32(7.1)], np.float32)
    unpacked = b"".join(struct.pack("<Bf", 0x2D, v) for v in values)
    shape = wire.encode_len_field(7, wire.encode_packed_varints(1, [5]))
    doubles = wire.encode_len_field(8, values.astype("<f8").tobytes())
    unpacked_doubles = b"".join(struct.pack("<Bd", 0x41, v) for v in values)
    split = (wire.encode_len_field(5, values[:2].tobytes()) + unpacked[10:15]
             + wire.encode_len_field(5, values[3:].tobytes()))
    legacy = b"".join(wire.encode_varint_field(n, d) for n, d in zip((1, 2, 3, 4), (1, 1, 1, 5)))
    blobs = {"unpacked": unpacked + shape, "double": shape + doubles,
             "unpacked_double": unpacked_doubles + shape, "split": shape + split,
             "legacy": legacy + wire.encode_len_field(5, values.tobytes()),
             "noshape": wire.encode_len_field(5, values.tobytes())}
    path = tmp_path / "m.caffemodel"
    path.write_bytes(b"".join(_layer_bytes(k, [v]) for k, v in blobs.items()))
    loaded = load_weights(path)
    parsed = caffe_pb2.NetParameter.FromString(path.read_bytes())
    for layer in parsed.layer:
        blob = layer.blobs[0]
        expected = np.array(blob.double_data or blob.data, np.float32)
        assert np.array_equal(_bits(loaded[layer.name][0].reshape(-1)), _bits(expected))
        assert np.array_equal(loaded[layer.name][0].reshape(-1), values)
    assert loaded["legacy"][0].shape == (1, 1, 1, 5) and loaded["noshape"][0].shape == (5,)


def test_double_data_takes_precedence_like_caffe(tmp_path):
    shape = wire.encode_len_field(7, wire.encode_packed_varints(1, [2]))
    blob = (shape + wire.encode_len_field(5, np.float32([9, 9]).tobytes())
            + wire.encode_len_field(8, np.float64([1, 2]).tobytes()))
    path = tmp_path / "m.caffemodel"
    path.write_bytes(_layer_bytes("l", [blob]))
    assert np.array_equal(load_weights(path)["l"][0], [1, 2])


def test_v0_nested_layer_blobs(tmp_path):
    """Pre-2014 files keep name, type string and blobs inside a V0 `layer` of each V1 layer."""
    values = np.arange(6, dtype=np.float32)
    blob = (b"".join(wire.encode_varint_field(n, d) for n, d in zip((1, 2, 3, 4), (1, 1, 2, 3)))
            + wire.encode_len_field(5, values.tobytes()))
    v0 = (wire.encode_len_field(1, b"ip") + wire.encode_len_field(2, b"innerproduct")
          + wire.encode_len_field(50, blob))
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(wire.encode_len_field(2, wire.encode_len_field(1, v0)))
    loaded = load_weights(path)
    assert loaded.types == {"ip": "InnerProduct"}
    assert np.array_equal(loaded["ip"][0].reshape(2, 3), values.reshape(2, 3))
    assert caffe_pb2.NetParameter.FromString(path.read_bytes()).layers[0].layer.name == "ip"
    assert not loaded.net.layers[0].layer.blobs  # stripped from the definition


def test_unknown_fields_and_diffs_are_ignored(tmp_path):
    values = np.float32([1, 2, 3])
    blob = (wire.encode_len_field(5, values.tobytes()) + wire.encode_len_field(6, values.tobytes())
            + wire.encode_len_field(7, wire.encode_packed_varints(1, [3]))
            + wire.encode_varint_field(99, 5))
    path = tmp_path / "m.caffemodel"
    path.write_bytes(_layer_bytes("l", [blob]) + wire.encode_varint_field(77, 1))
    assert np.array_equal(load_weights(path)["l"][0], values)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=5), min_size=1, max_size=4),
       legacy=st.booleans(), seed=st.integers(0, 2**16))
def test_round_trip_any_shapes_bit_identical(tmp_path, shapes, legacy, seed):
    if legacy:
        shapes = [s[:4] for s in shapes]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 2**32, size=sum(int(np.prod(s)) for s in shapes), dtype=np.uint32)
    weights, offset = Weights(types={"layer": "Convolution"}), 0
    arrays = []
    for s in shapes:  # any bit pattern, NaN payloads and denormals included
        n = int(np.prod(s))
        arrays.append(raw[offset:offset + n].view(np.float32).reshape(s))
        offset += n
    weights["layer"] = arrays
    path = tmp_path / "h.caffemodel"
    save_weights(path, weights, legacy=legacy)
    parsed = caffe_pb2.NetParameter.FromString(path.read_bytes())
    blobs = (parsed.layers if legacy else parsed.layer)[0].blobs
    loaded = load_weights(path)["layer"]
    for array, blob, back in zip(arrays, blobs, loaded):
        assert np.array_equal(_bits(np.array(blob.data, np.float32)), _bits(array.reshape(-1)))
        assert back.size == array.size
        assert np.array_equal(_bits(back.reshape(-1)), _bits(array.reshape(-1)))
        if not legacy:
            assert back.shape == array.shape and list(blob.shape.dim) == list(array.shape)
    h5 = tmp_path / "h.caffemodel.h5"
    save_weights(h5, weights, format="hdf5")
    for array, back in zip(arrays, load_weights(h5)["layer"]):
        assert back.shape == array.shape and np.array_equal(_bits(back), _bits(array))


def test_float64_and_strided_arrays_are_written_as_float32(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6) / 7
    weights = Weights(a=[base], b=[base[:, ::2]], c=[base.astype(">f4")])
    path = tmp_path / "m.caffemodel"
    save_weights(path, weights)
    loaded = load_weights(path)
    for name in "abc":
        assert loaded[name][0].dtype == np.float32
        assert np.array_equal(loaded[name][0], np.asarray(weights[name][0], np.float32))


# ---------------------------------------------------------------------- round trips

def test_v1_current_hdf5_current_round_trip_bit_identical(tmp_path):
    net = vgg16(width=1 / 32, num_classes=7)
    rng = np.random.default_rng(3)
    from surgery.shapes import param_shapes
    weights = Weights()
    for name, shapes in param_shapes(net).items():
        weights[name] = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        weights.types[name] = "InnerProduct" if name.startswith("fc") else "Convolution"
    v1, cur, h5, cur2 = (tmp_path / n for n in ("v1.caffemodel", "cur.caffemodel",
                                                 "w.caffemodel.h5", "cur2.caffemodel"))
    save_weights(v1, weights, net=net, legacy=True)
    from_v1 = load_weights_for(v1, net)  # legacy 4-d dims coerced to the net's shapes
    assert_same_weights(from_v1, weights)
    save_weights(cur, load_weights(v1), net=net)
    current = load_weights(cur)
    assert current.net.layer and not current.net.layers
    assert_same_weights(current, weights)
    save_weights(h5, current, format="hdf5", net=net)
    with h5py.File(h5, "r") as f:
        assert f["data/conv1_1/0"].shape == weights["conv1_1"][0].shape
        assert "relu1_1" in f["data"] and len(f["data/relu1_1"]) == 0  # every net layer
    from_h5 = load_weights(h5)
    assert from_h5.net is None
    assert_same_weights(from_h5, weights)
    save_weights(cur2, from_h5, net=net)
    assert cur2.read_bytes() == cur.read_bytes()


def test_hdf5_nested_layer_names_and_sniffing(tmp_path):
    weights = Weights({"inception/3x3": [np.ones((2, 2), np.float32)],
                       "fc": [np.zeros(3, np.float32)]})
    path = tmp_path / "weights.bin"  # HDF5 told by content, not extension
    save_weights(path, weights, format="hdf5")
    assert_same_weights(load_weights(path), weights)


def test_opencv_loads_what_surgery_writes(tmp_path):
    net, weights = _small_net(), _small_weights()
    proto = tmp_path / "net.prototxt"
    write_prototxt(proto, net)
    image = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    outputs = []
    for legacy in (False, True):
        model = tmp_path / f"m{legacy}.caffemodel"
        save_weights(model, weights, net=net, legacy=legacy)
        cv = cv2.dnn.readNetFromCaffe(str(proto), str(model))
        cv.setInput(image)
        outputs.append(cv.forward("fc").reshape(-1))
    # numpy forward: conv (pad 1) + relu + 2x2 max pool + inner product
    w, b = weights["conv1"]
    padded = np.pad(image[0], ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    conv = np.maximum(np.einsum("chwij,ocij->ohw", windows, w) + b[:, None, None], 0)
    pooled = conv.reshape(4, 4, 2, 4, 2).max(axis=(2, 4))
    expected = weights["fc"][0] @ pooled.reshape(-1) + weights["fc"][1]
    for out in outputs:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_load_weights_for_rules(tmp_path):
    net = upgrade_net(_small_net())
    weights = _small_weights()
    path = tmp_path / "m.caffemodel"
    save_weights(path, weights, net=net)
    assert_same_weights(load_weights_for(path, net), weights)
    # a shape-stored 1x1x5x64 blob does not fit 5x64 (only legacy dims match trailing axes)
    bad = Weights({"conv1": weights["conv1"], "fc": [weights["fc"][0].reshape(1, 1, 5, 64),
                                                     weights["fc"][1]]})
    save_weights(path, bad)
    with pytest.raises(FcnkitError, match=r"layer 'fc' param 0: shape 1x1x5x64 in the file, 5x64"):
        load_weights_for(path, net)
    save_weights(path, Weights({"fc": weights["fc"][:1]}))
    with pytest.raises(FcnkitError, match="layer 'fc' has 1 blobs, the net expects 2"):
        load_weights_for(path, net)
    extra = Weights({"unrelated": [np.zeros(3, np.float32)], **weights})
    save_weights(path, extra)
    assert list(load_weights_for(path, net)) == ["conv1", "fc"]  # Caffe ignores extra layers


# --------------------------------------------------------------------------- errors

def test_truncated_file_is_reported(tmp_path):
    net, weights = _small_net(), _small_weights()
    path = tmp_path / "m.caffemodel"
    save_weights(path, weights, net=net)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 3):
        short = tmp_path / f"cut{cut}.caffemodel"
        short.write_bytes(data[:cut])
        with pytest.raises(FcnkitError, match=rf"cut{cut}\.caffemodel: truncated or corrupt"):
            load_weights(short)


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b'name: "VGG"\nlayer {\n  name: "conv1"\n}\n', "text file .a prototxt"),
    (b"# a comment\ninput: \"data\"\n", "text file .a prototxt"),
    (b"\xff\xd8\xff\xe0 JFIF", "not a valid caffemodel"),
])
def test_not_a_caffemodel(tmp_path, content, message):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(content)
    with pytest.raises(FcnkitError, match=rf"bad\.caffemodel: .*{message}"):
        load_weights(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FcnkitError, match="no such file"):
        load_weights(tmp_path / "nope.caffemodel")
    with pytest.raises(FcnkitError, match="is a folder"):
        load_weights(tmp_path)


def test_hdf5_without_data_group(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(FcnkitError, match=r"w\.h5: HDF5 file has no /data group"):
        load_weights(path)


def test_blob_shape_count_mismatch(tmp_path):
    blob = (wire.encode_len_field(7, wire.encode_packed_varints(1, [2, 3]))
            + wire.encode_len_field(5, np.float32([1, 2]).tobytes()))
    path = tmp_path / "m.caffemodel"
    path.write_bytes(_layer_bytes("conv9", [blob]))
    with pytest.raises(FcnkitError, match=r"layer 'conv9' blob 0: shape \(2, 3\) needs 6 values"):
        load_weights(path)


def test_write_errors_leave_nothing(tmp_path):
    weights = _small_weights()
    with pytest.raises(FcnkitError, match="does not exist"):
        save_weights(tmp_path / "missing" / "m.caffemodel", weights)
    crop_net = caffe_pb2.NetParameter()
    crop_net.layer.add(name="conv1", type="Crop")
    crop_net.layer.add(name="fc", type="InnerProduct")
    with pytest.raises(FcnkitError, match="'Crop' has no legacy V1 equivalent"):
        save_weights(tmp_path / "m.caffemodel", weights, net=crop_net, legacy=True)
    with pytest.raises(FcnkitError, match="no layer named 'fc'"):
        save_weights(tmp_path / "m.caffemodel", weights, net=caffe_pb2.NetParameter(
            layer=[caffe_pb2.LayerParameter(name="conv1")]))
    with pytest.raises(FcnkitError, match="type is unknown"):
        save_weights(tmp_path / "m.caffemodel", Weights(x=[np.zeros(2)]), legacy=True)
    with pytest.raises(FcnkitError, match="5-d shape"):
        save_weights(tmp_path / "m.caffemodel", Weights(x=[np.zeros((1,) * 5)],
                                                         types={"x": "Convolution"}), legacy=True)
    with pytest.raises(FcnkitError, match="unknown weights format"):
        save_weights(tmp_path / "m.caffemodel", weights, format="npz")
    assert list(tmp_path.iterdir()) == []


def test_published_style_v1_train_net_resolves_real_shapes(tmp_path):
    """Published V1 caffemodels carry their train/val net: DATA layers per phase with a 224
    crop, SOFTMAX_LOSS and ACCURACY. Its definitions are enough to give the blobs real shapes."""
    classifier = upgrade_net(vgg16(width=1 / 16))
    net = caffe_pb2.NetParameter(name="VGG_ILSVRC_16_layers")
    for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        data = net.layer.add(name="data", type="Data", top=["data", "label"])
        data.include.add(phase=phase)
        data.transform_param.crop_size = 224
    net.layer.extend(layer for layer in classifier.layer if layer.type not in ("Input", "Softmax"))
    net.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["fc8", "label"], top=["loss"])
    accuracy = net.layer.add(name="accuracy", type="Accuracy", bottom=["fc8", "label"],
                             top=["accuracy"])
    accuracy.include.add(phase=caffe_pb2.TEST)
    from surgery.shapes import param_shapes
    shapes = param_shapes(classifier)
    weights = Weights((name, [np.full(s, 0.5, np.float32) for s in blob_shapes])
                      for name, blob_shapes in shapes.items())
    path = tmp_path / "published.caffemodel"
    save_weights(path, weights, net=net, legacy=True)
    loaded = load_weights(path)
    assert loaded.net.layers[0].type == caffe_pb2.V1LayerParameter.DATA
    assert not loaded.legacy
    assert loaded["fc6"][0].shape == (256, 1568) and loaded["conv1_1"][1].shape == (4,)
