"""NetSpec: pycaffe's builder semantics, driven by fcnkit's schema."""
import re

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from netgen.errors import FcnkitError
from netgen.netspec import LAYER_TYPES, NetSpec, P, L, to_proto
from netgen.proto import caffe_pb2


def conv_relu(bottom, nout, ks=3, stride=1, pad=1):
    """The reference FCN net.py helper, verbatim in spirit: a pycaffe script ports unchanged."""
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad,
                         param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)])
    return conv, L.ReLU(conv, in_place=True)


def small_net():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv1, n.relu1 = conv_relu(n.data, 4)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool1, convolution_param=dict(num_output=4, kernel_size=4, stride=2,
                                                           bias_term=False), param=[dict(lr_mult=0)])
    return n


EXPECTED = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 pad: 1 kernel_size: 3 stride: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool1" top: "up" param { lr_mult: 0 }
  convolution_param { num_output: 4 bias_term: false kernel_size: 4 stride: 2 } }
"""


def test_pycaffe_style_script_gives_expected_proto():
    expected = text_format.Parse(EXPECTED, caffe_pb2.NetParameter())
    assert small_net().to_proto() == expected


def test_layer_options_route_to_the_type_parameter_or_the_layer():
    n = NetSpec()
    n.data, n.label = L.Python(module="solvers.data.layers", layer="VOCSegDataLayer",
                               param_str="{'split': 'train'}", ntop=2)
    n.score = L.Convolution(n.data, num_output=21, kernel_size=1)
    n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(normalize=False, ignore_label=255),
                               loss_weight=2, include=dict(phase=caffe_pb2.TRAIN))
    net = n.to_proto()
    py, _, loss = net.layer
    assert list(py.top) == ["data", "label"]
    assert py.python_param.layer == "VOCSegDataLayer"
    assert loss.loss_param.normalize is False and loss.loss_param.ignore_label == 255
    assert list(loss.loss_weight) == [2.0]
    assert loss.include[0].phase == caffe_pb2.TRAIN


def test_unnamed_tops_get_automatic_names_and_to_proto_of_tops():
    data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    relu = L.ReLU(L.Convolution(data, num_output=1, kernel_size=1))
    net = to_proto(relu)
    assert [l.name for l in net.layer] == ["Input1", "Convolution1", "ReLU1"]
    assert net.layer[2].bottom == ["Convolution1"]


def test_enum_names_as_strings_and_silence_with_no_top():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.pool = L.Pooling(n.data, pool="AVE", global_pooling=True)
    L.Silence(n.pool, ntop=0)
    assert n.to_proto().layer[1].pooling_param.pool == caffe_pb2.PoolingParameter.AVE


def test_layer_vocabulary_comes_from_the_schema():
    for t in ("Convolution", "Deconvolution", "Pooling", "Crop", "Eltwise", "Scale", "LRN",
              "InnerProduct", "Dropout", "SoftmaxWithLoss", "Python", "Input", "Concat"):
        assert t in LAYER_TYPES
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM


# Each mistake is a FcnkitError and also the class pycaffe's net_spec.py lets through for it
# (BVLC caffe python/caffe/net_spec.py, master 9b89154): getattr on the LayerParameter for an
# unknown option (AttributeError), protobuf's own TypeError/ValueError for a bad value. pycaffe
# does not check layer types (Caffe does when it loads the net): that one is a plain FcnkitError.
@pytest.mark.parametrize("make, message, pycaffe_class", [
    (lambda d: L.Convolution(d, kernel_sise=3), "layer bad (Convolution): unknown option 'kernel_sise'",
     AttributeError),
    (lambda d: L.Pooling(d, pool="MEDIAN"), "pool must be one of MAX, AVE, STOCHASTIC", ValueError),
    (lambda d: L.Convolutoin(d), "unknown layer type 'Convolutoin'", FcnkitError),
    (lambda d: L.Convolution(d, num_output="many"), "num_output: bad value 'many'", TypeError),
    (lambda d: L.Convolution(d, weight_filler=3), "expected a dict of FillerParameter", AttributeError),
])
def test_mistakes_are_named(make, message, pycaffe_class):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.bad = make(n.data)
    with pytest.raises(FcnkitError, match=re.escape(message)) as caught:
        n.to_proto()
    assert isinstance(caught.value, pycaffe_class)


def test_an_input_that_is_not_a_top_is_pycaffes_type_error():
    """BVLC test_net_spec.py test_type_error: pycaffe raises TypeError with exactly these words
    when the layer is made; unpacking the tuple of tops is the fix."""
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$") as e:
        L.Silence(data, ntop=0)
    assert isinstance(e.value, FcnkitError)
    L.Silence(*data, ntop=0)


def _lenet(named: bool, **data_options):
    """BVLC test_net_spec.py's lenet / anon_lenet: NetSpec attributes, or tops left unnamed."""
    n = NetSpec()
    data, label = L.DummyData(shape=[dict(dim=[2, 1, 28, 28]), dict(dim=[2, 1, 1, 1])], ntop=2,
                              **data_options)
    xavier = dict(type="xavier")
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=xavier)
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50, weight_filler=xavier)
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500, weight_filler=xavier)
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=xavier)
    loss = L.SoftmaxWithLoss(ip2, label)
    if not named:
        return loss.to_proto()
    n.data, n.label, n.conv1, n.pool1, n.conv2, n.pool2 = data, label, conv1, pool1, conv2, pool2
    n.ip1, n.relu1, n.ip2, n.loss = ip1, relu1, ip2, loss
    return n.to_proto()


def _silent_net():
    n = NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    return n.to_proto()


def test_lenet_and_topless_nets_build_as_in_pycaffe():
    """BVLC test_net_spec.py test_lenet / test_zero_tops on fcnkit's engine: ReLU in place,
    all 9 layers made, a net of top-less layers has no outputs."""
    from solvers.engine import Net

    for named in (True, False):
        proto = _lenet(named)
        assert proto.layer[6].bottom == proto.layer[6].top
        assert len(Net(proto, "TEST").layers) == 9
    assert len(Net(_silent_net(), "TEST").forward()) == 0


def test_real_caffe_builds_netspec_nets(tmp_path):
    """The same nets (with the reference's DummyData transform_param, which Caffe ignores) in
    real Caffe where pycaffe imports."""
    from solvers.caffe_backend import pycaffe

    caffe = pycaffe()
    if caffe is None:
        pytest.skip("needs pycaffe (import caffe); CI has no Caffe")
    for i, proto in enumerate([_lenet(True, transform_param=dict(scale=1 / 255)),
                               _lenet(False, transform_param=dict(scale=1 / 255)), _silent_net()]):
        path = tmp_path / f"net{i}.prototxt"
        path.write_text(str(proto))
        net = caffe.Net(str(path), caffe.TEST)
        assert len(net.layers) == (9 if i < 2 else 3) and (i < 2 or len(net.forward()) == 0)


def test_opencv_reads_and_runs_a_netspec_net(tmp_path):
    """Independent reader: OpenCV's Caffe importer takes our text and runs it."""
    proto = tmp_path / "net.prototxt"
    proto.write_text(str(small_net().to_proto()))
    weights = caffe_pb2.NetParameter()
    rng = np.random.default_rng(0)
    for name, shape in [("conv1", (4, 3, 3, 3)), ("conv1", (4,)), ("up", (4, 4, 4, 4))]:
        layer = next((l for l in weights.layer if l.name == name), None) or weights.layer.add(name=name)
        blob = layer.blobs.add()
        blob.shape.dim.extend(shape)
        blob.data.extend(rng.standard_normal(shape).astype(np.float32).ravel())
    model = tmp_path / "net.caffemodel"
    model.write_bytes(weights.SerializeToString())
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.setInput(np.zeros((1, 3, 8, 8), np.float32))
    assert net.forward("up").shape == (1, 4, 10, 10)  # pool 8->4, deconv 2*(4-1)+4
