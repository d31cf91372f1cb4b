"""Net construction and running: NetState filtering, wiring, in-place blobs, loss weights,
parameter sharing and multipliers, gradient accumulation, weights I/O, test-net sharing,
Python layers, mixed precision, and the errors a bad prototxt produces."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import net_param, randomize
from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2
from netgen.schema import to_prototxt
from solvers.data.layers import dataset_from_layer
from solvers.engine import Net

DATA = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 5 } } }\n'
LABEL = 'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 dim: 1 dim: 6 dim: 5 } } }\n'

SMALL = DATA + LABEL + '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "acc" include { phase: TEST } }
'''


def make(text: str = SMALL, phase: str = "TRAIN", **kw) -> Net:
    torch.manual_seed(0)
    return Net(net_param(text), phase, **kw)


def feed(net: Net, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    net.blobs["data"].data[...] = rng.normal(size=net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 3, size=net.blobs["label"].shape)


# ------------------------------------------------------------------ structure

def test_pycaffe_attributes():
    net = make()
    assert list(net.blobs) == ["data", "label", "conv1", "score", "loss"]
    assert net.inputs == ["data", "label"] and net.outputs == ["loss"]
    assert [l.name for l in net.layers] == ["data", "label", "conv1", "relu1", "score", "loss"]
    assert list(net.params) == ["conv1", "score"]
    assert [p.shape for p in net.params["conv1"]] == [(4, 3, 3, 3), (4,)]
    assert [(p.lr_mult, p.decay_mult) for p in net.params["conv1"]] == [(1, 1), (2, 0)]
    assert net.learnable_params() == net.params["conv1"] + net.params["score"]
    assert net.blobs["score"].shape == (2, 3, 6, 5)       # known before any forward
    assert net.blobs["loss"].shape == ()
    assert net.layers[-1].loss_weights == [1.0]


def test_phase_filter_keeps_test_only_layers():
    test = make(phase="TEST")
    assert [l.name for l in test.layers][-1] == "acc"
    assert test.outputs == ["loss", "acc"]
    feed(test)
    out = test.forward()
    assert set(out) == {"loss", "acc"} and 0 <= float(out["acc"]) <= 1


@pytest.mark.parametrize("rule,state,kept", [
    ("include { phase: TRAIN }", dict(phase="TEST"), False),
    ("exclude { phase: TEST }", dict(phase="TEST"), False),
    ("exclude { phase: TEST }", dict(phase="TRAIN"), True),
    ("include { min_level: 2 }", dict(level=1), False),
    ("include { min_level: 2 }", dict(level=2), True),
    ("include { max_level: 0 }", dict(level=1), False),
    ("include { stage: 'a' stage: 'b' }", dict(stages=["a"]), False),
    ("include { stage: 'a' stage: 'b' }", dict(stages=["a", "b"]), True),
    ("include { stage: 'a' } include { stage: 'b' }", dict(stages=["b"]), True),
    ("include { not_stage: 'x' }", dict(stages=["x"]), False),
    ("include { phase: TRAIN not_stage: 'x' }", dict(stages=["y"]), True),
])
def test_net_state_rules(rule, state, kept):
    text = DATA + f'layer {{ name: "r" type: "ReLU" bottom: "data" top: "r" {rule} }}'
    net = make(text, state.pop("phase", "TRAIN"), **state)
    assert ("r" in [l.name for l in net.layers]) == kept


def test_in_place_blob_holds_last_value_and_first_gradient():
    """As in Caffe: after conv -> in-place ReLU the blob holds the ReLU output, and its diff
    (written last by the ReLU's backward) is the gradient at the convolution output."""
    net = make()
    net.retain_blob_diffs = True
    feed(net)
    net.forward_backward()
    w, b = (p.tensor.detach() for p in net.params["conv1"])
    pre = torch.nn.functional.conv2d(torch.from_numpy(net.blobs["data"].data), w, b, padding=1)
    np.testing.assert_allclose(net.blobs["conv1"].data, pre.clamp_min(0).numpy(), rtol=1e-5, atol=1e-6)
    diff = net.blobs["conv1"].diff
    assert (diff[pre.numpy() <= 0] == 0).all() and diff[pre.numpy() > 0].any()


IN_PLACE = DATA + LABEL + '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "side" type: "Convolution" bottom: "score" top: "side" loss_weight: 0.1 convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "score" top: "score" relu_param { negative_slope: 0.1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
'''


def test_in_place_relu_overwrites_only_when_safe():
    """conv -> in-place ReLU reuses the conv output, as Caffe does; a value another layer
    also reads (score, read by side) is not overwritten. Gradients agree either way."""
    net = make(IN_PLACE)
    assert {l.name: l.impl.in_place for l in net.layers if l.type == "ReLU"} == \
        {"relu1": True, "relu2": False}
    results = []
    for retain in (False, True):          # retained blob diffs turn overwriting off
        net = make(IN_PLACE)
        randomize(net, seed=9)
        feed(net, seed=10)
        net.retain_blob_diffs = retain
        loss = net.forward_backward()
        results.append([loss] + [p.diff.copy() for p in net.learnable_params()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_blob_consumed_twice_sums_gradients_like_split():
    text = DATA + '''
layer { name: "a" type: "Scale" bottom: "data" top: "a" scale_param { num_axes: 0 } }
layer { name: "b" type: "Eltwise" bottom: "a" bottom: "a" top: "b" eltwise_param { operation: PROD } }
layer { name: "loss" type: "EuclideanLoss" bottom: "b" bottom: "data" top: "loss" }'''
    net = make(text, dtype=torch.float64)
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 5))
    net.blobs["data"].data[...] = x
    net.params["a"][0].data = 0.5
    net.forward_backward()
    s = 0.5   # loss = sum((s^2 x^2 - x)^2) / 4 -> d/ds = sum(2 (s^2 x^2 - x) 2 s x^2) / 4
    assert float(net.params["a"][0].diff) == pytest.approx(((s * s * x * x - x) * s * x * x).sum())


def test_loss_weight_on_any_top_and_defaults():
    text = DATA + '''
layer { name: "s" type: "Scale" bottom: "data" top: "s" loss_weight: 0.5 scale_param { num_axes: 0 } }'''
    net = make(text, dtype=torch.float64)
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 5))
    net.blobs["data"].data[...] = x
    net.params["s"][0].data = 3.0
    assert net.forward_backward() == pytest.approx(0.5 * 3 * x.sum())
    assert float(net.params["s"][0].diff) == pytest.approx(0.5 * x.sum())


def test_gradients_accumulate_until_cleared():
    net = make()
    feed(net)
    net.forward_backward()
    once = net.params["conv1"][0].diff.copy()
    net.forward_backward()
    np.testing.assert_allclose(net.params["conv1"][0].diff, 2 * once, rtol=1e-5, atol=1e-8)
    net.clear_param_diffs()
    assert not net.params["conv1"][0].diff.any()
    net.forward()
    net.backward()
    np.testing.assert_allclose(net.params["conv1"][0].diff, once, rtol=1e-5, atol=1e-8)


def test_scaled_backward_scales_gradients_not_loss():
    net = make()
    feed(net)
    loss = net.forward_backward()
    g = net.params["score"][0].diff.copy()
    net.clear_param_diffs()
    assert net.forward_backward(scale=8.0) == pytest.approx(loss)
    np.testing.assert_allclose(net.params["score"][0].diff, 8 * g, rtol=1e-5)


def test_lr_mult_zero_params_get_no_gradient():
    text = SMALL.replace('param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }',
                         'param { lr_mult: 0 } param { lr_mult: 0 }')
    net = make(text)
    feed(net)
    net.forward_backward()
    assert all(not p.tensor.requires_grad and not p.diff.any() for p in net.params["conv1"])
    assert net.params["score"][0].diff.any()


def test_test_phase_forward_records_no_graph():
    net = make(phase="TEST")
    feed(net)
    net.forward()
    with pytest.raises(RuntimeError, match="backward"):
        net.backward()


def test_forward_kwargs_reshape_inputs():
    net = make(phase="TEST")
    x = np.random.default_rng(3).normal(size=(1, 3, 9, 7)).astype(np.float32)
    net.forward(data=x, label=np.zeros((1, 1, 9, 7)))
    assert net.blobs["score"].shape == (1, 3, 9, 7)
    np.testing.assert_array_equal(net.blobs["data"].data, x)
    with pytest.raises(FcnkitError, match="'score' is not a net input"):
        net.forward(score=x)


# ------------------------------------------------------------------ parameter sharing

SHARED = DATA + '''
layer { name: "a" type: "Convolution" bottom: "data" top: "a" param { name: "w" lr_mult: 3 }
  convolution_param { num_output: 3 kernel_size: 1 bias_term: false } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" param { name: "w" {spec} }
  convolution_param { num_output: 3 {shape} bias_term: false } }
'''


def shared(spec: str = "", shape: str = "kernel_size: 1") -> Net:
    return make(SHARED.replace("{spec}", spec).replace("{shape}", shape))


def test_shared_param_is_one_object_with_owner_multipliers():
    net = shared()
    assert net.params["a"][0] is net.params["b"][0]
    assert net.learnable_params() == [net.params["a"][0]]
    assert net.params["a"][0].lr_mult == 3


@pytest.mark.parametrize("spec,shape,msg", [
    ("", "kernel_size: 3", "shared blob has shape"),
    ("lr_mult: 2", "kernel_size: 1", "mismatched lr_mult"),
])
def test_shared_param_mismatches(spec, shape, msg):
    with pytest.raises(FcnkitError, match=f"layer 'b'.*{msg}"):
        shared(spec, shape)


def test_permissive_sharing_matches_counts():
    text = DATA + '''
layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" param { name: "w" }
  inner_product_param { num_output: 6 bias_term: false axis: 3 } }
layer { name: "b" type: "InnerProduct" bottom: "data" top: "b" param { name: "w" share_mode: PERMISSIVE }
  inner_product_param { num_output: 6 bias_term: false axis: 3 transpose: true } }'''
    net = make(text)
    assert net.params["a"][0] is net.params["b"][0]
    assert net.layers[2].param_shapes == [(5, 6)] and net.params["a"][0].shape == (6, 5)
    net.blobs["data"].data[...] = np.random.default_rng(8).normal(size=(2, 3, 6, 5))
    out = net.forward()
    w = net.params["a"][0].data
    np.testing.assert_allclose(out["b"], net.blobs["data"].data @ w.reshape(5, 6), rtol=1e-5)


# ------------------------------------------------------------------ weights I/O

@pytest.mark.parametrize("fmt,suffix", [("binary", ".caffemodel"), ("hdf5", ".caffemodel.h5")])
def test_save_and_copy_from_round_trip(tmp_path, fmt, suffix):
    net = make(phase="TEST")
    randomize(net, seed=4)
    path = tmp_path / f"w{suffix}"
    net.save(path, format=fmt)
    other = make(phase="TEST", weights=str(path))
    for name in net.params:
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    feed(net)
    feed(other)
    np.testing.assert_array_equal(net.forward()["loss"], other.forward()["loss"])
    assert set(net.to_weights().types.items()) == {("conv1", "Convolution"), ("score", "Convolution")}


def test_copy_from_shape_mismatch_names_layer(tmp_path):
    net = make(phase="TEST")
    path = tmp_path / "w.caffemodel"
    net.save(path)
    bigger = make(SMALL.replace("num_output: 4", "num_output: 5"), phase="TEST")
    with pytest.raises(FcnkitError, match="layer 'conv1' blob 0 has shape"):
        bigger.copy_from(path)


def test_copy_from_skips_layers_either_side_lacks():
    net = make(phase="TEST")
    before = net.params["score"][0].data.copy()
    net.copy_from({"conv1": [np.ones((4, 3, 3, 3)), np.zeros(4)], "elsewhere": [np.ones(1)]})
    assert (net.params["conv1"][0].data == 1).all()
    np.testing.assert_array_equal(net.params["score"][0].data, before)


def test_prototxt_blobs_are_initial_values():
    param = net_param(SMALL)
    conv = param.layer[2]
    blob = conv.blobs.add()
    blob.num, blob.channels, blob.height, blob.width = 4, 3, 3, 3     # legacy dims
    blob.data.extend(np.arange(108, dtype=np.float32))
    conv.blobs.add(shape=caffe_pb2.BlobShape(dim=[4]), data=[1, 2, 3, 4])
    net = Net(param, "TEST")
    np.testing.assert_array_equal(net.params["conv1"][0].data.ravel(), np.arange(108))
    np.testing.assert_array_equal(net.params["conv1"][1].data, [1, 2, 3, 4])


def test_test_net_shares_train_weights():
    train, test = make(), make(phase="TEST")
    test.share_weights(train)
    assert test.params["conv1"][0].tensor is train.params["conv1"][0].tensor
    train.params["score"][1].data = 7.0
    assert (test.params["score"][1].data == 7.0).all()


def test_legacy_v1_net_runs():
    v1 = caffe_pb2.NetParameter(input=["data"], input_dim=[1, 3, 5, 5])
    layer = v1.layers.add(name="conv", type=caffe_pb2.V1LayerParameter.CONVOLUTION,
                          bottom=["data"], top=["conv"], blobs_lr=[1, 2])
    layer.convolution_param.num_output = 2
    layer.convolution_param.kernel_size.append(3)
    net = Net(v1, "TEST")
    assert net.inputs == ["data"] and net.blobs["conv"].shape == (1, 2, 3, 3)
    assert [p.lr_mult for p in net.params["conv"]] == [1, 2]


def test_net_from_prototxt_path(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(to_prototxt(net_param(SMALL)))
    assert Net(str(path), "TEST").outputs == ["loss", "acc"]


# ------------------------------------------------------------------ Python layers

def test_python_data_layer_feeds_dataset_batches():
    param_str = "{'split': 'train', 'n_classes': 3, 'size': (20, 24), 'length': 4, 'randomize': False}"
    text = f'''
layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "solvers.data.layers" layer: "SyntheticSegDataLayer" param_str: "{param_str}" }} }}
layer {{ name: "score" type: "Convolution" bottom: "data" top: "score" convolution_param {{ num_output: 4 kernel_size: 1 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" loss_param {{ ignore_label: 255 }} }}'''
    net = make(text)
    dataset = dataset_from_layer("solvers.data.layers", "SyntheticSegDataLayer", param_str)
    assert net.blobs["data"].shape == (1, 3, 20, 24)
    for i in range(2):
        loss = net.forward_backward()
        item = dataset.load(i)
        np.testing.assert_allclose(net.blobs["data"].data[0], item["data"], rtol=1e-6)
        np.testing.assert_array_equal(net.blobs["label"].data[0], item["label"])
        assert np.isfinite(loss) and loss > 0


def test_arbitrary_python_modules_need_permission():
    text = DATA + '''layer { name: "m" type: "Python" bottom: "data" top: "m"
  python_param { module: "engine_pylayer" layer: "Multiply" param_str: "2.5" } }
layer { name: "loss" type: "EuclideanLoss" bottom: "m" bottom: "data" top: "loss" }'''
    with pytest.raises(FcnkitError, match="layer 'm' \\(Python\\).*allow_python_modules"):
        make(text)
    net = make(text, allow_python_modules=True, dtype=torch.float64)
    net.retain_blob_diffs = True
    x = np.random.default_rng(5).normal(size=(2, 3, 6, 5))
    net.blobs["data"].data[...] = x
    loss = net.forward_backward()
    assert loss == pytest.approx(((1.5 * x) ** 2).sum() / 4)
    # d/dx of |2.5x - x|^2 / 4 through both the Python layer (2.5 (1.5x)/2) and the loss (-1.5x/2)
    np.testing.assert_allclose(net.blobs["data"].diff, 1.5 * x * (2.5 - 1) / 2, rtol=1e-12)


def test_python_sink_layer_without_tops():
    import engine_pylayer
    text = DATA + '''layer { name: "rec" type: "Python" bottom: "data"
  python_param { module: "engine_pylayer" layer: "Record" } }'''
    net = make(text, allow_python_modules=True)
    x = np.random.default_rng(6).normal(size=(2, 3, 6, 5)).astype(np.float32)
    assert net.forward(data=x) == {}
    assert engine_pylayer.Record.seen[-1] == pytest.approx(float(x.sum()), rel=1e-5)


def test_data_layer_errors_name_the_layer():
    text = '''layer { name: "feed" type: "Python" top: "data" top: "label"
  python_param { module: "solvers.data.layers" layer: "SyntheticSegDataLayer" param_str: "{'n_classes': 0}" } }'''
    with pytest.raises(FcnkitError, match="layer 'feed' \\(Python\\): .*n_classes"):
        make(text)


def test_python_layer_failure_names_layer():
    text = DATA + '''layer { name: "m" type: "Python" bottom: "data" top: "m"
  python_param { module: "engine_pylayer" layer: "Broken" } }'''
    with pytest.raises(FcnkitError, match="layer 'm' \\(Python\\): setup\\(\\) failed: ValueError"):
        make(text, allow_python_modules=True)


# ------------------------------------------------------------------ precision

def test_bf16_autocast_keeps_loss_in_float32():
    net = make()
    randomize(net, seed=6)
    feed(net, seed=7)
    full = net.forward_backward()
    g = net.params["score"][0].diff.copy()
    net.clear_param_diffs()
    half = make(amp="bf16")
    half.copy_from({k: [p.data for p in v] for k, v in net.params.items()})
    feed(half, seed=7)
    assert half.forward_backward() == pytest.approx(full, rel=3e-2)
    assert half.blobs["loss"].tensor.dtype == torch.float32
    assert half.blobs["score"].tensor.dtype == torch.bfloat16
    assert half.params["score"][0].tensor.grad.dtype == torch.float32
    np.testing.assert_allclose(half.params["score"][0].diff, g, rtol=0.1, atol=0.05 * np.abs(g).max())


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("layers,msg", [
    ('layer { name: "x" type: "Frobnicate" bottom: "data" top: "x" }', "layer 'x': unsupported layer type 'Frobnicate'"),
    ('layer { name: "x" type: "ReLU" bottom: "nothing" top: "x" }', "layer 'x': unknown bottom blob 'nothing'"),
    ('layer { name: "x" type: "ReLU" bottom: "data" top: "label" }', "layer 'x': top blob 'label' produced by multiple"),
    ('layer { name: "x" type: "ReLU" bottom: "data" top: "x" pooling_param { pool: AVE } }',
     "layer 'x' \\(ReLU\\): pooling_param is not supported by ReLU layers"),
    ('layer { name: "x" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 2 kernel_size: 1 axis: 2 } }',
     "layer 'x' \\(Convolution\\): convolution_param.axis"),
    ('layer { name: "x" type: "Convolution" bottom: "data" top: "x" transform_param { scale: 2 } '
     'convolution_param { num_output: 2 kernel_size: 1 } }', "layer 'x' \\(Convolution\\): transform_param"),
    ('layer { name: "x" type: "Convolution" bottom: "data" top: "x" convolution_param { kernel_size: 1 } }',
     "layer 'x' \\(Convolution\\): convolution_param.num_output"),
    ('layer { name: "x" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 2 kernel_size: 1 group: 2 } }',
     "layer 'x' \\(Convolution\\): input channels 3 not divisible by group 2"),
    ('layer { name: "x" type: "Convolution" bottom: "data" top: "x" convolution_param { num_output: 2 kernel_size: 1 } '
     'param { } param { } param { } }', "layer 'x': 3 param specs for 2"),
    ('layer { name: "x" type: "ReLU" bottom: "data" top: "x" loss_weight: 1 loss_weight: 2 }', "layer 'x': loss_weight"),
    ('layer { name: "x" type: "ReLU" bottom: "data" top: "x" include { phase: TRAIN } exclude { phase: TEST } }',
     "layer x \\(ReLU\\): give include OR exclude"),
    ('layer { name: "x" type: "Eltwise" bottom: "data" bottom: "label" top: "x" eltwise_param { operation: PROD coeff: 1 coeff: 2 } }',
     "layer 'x' \\(Eltwise\\): eltwise_param.coeff applies only to SUM"),
    ('layer { name: "x" type: "Crop" bottom: "data" bottom: "label" top: "x" crop_param { axis: 1 offset: 2 } }',
     "layer 'x' \\(Crop\\): crop of axis 2 out of bounds"),
    ('layer { name: "x" type: "Pooling" bottom: "data" top: "x" pooling_param { kernel_size: 9 } }',
     "layer 'x' \\(Pooling\\): input \\(6, 5\\) is smaller"),
    ('layer { name: "x" type: "Softmax" bottom: "data" top: "x" softmax_param { axis: 4 } }',
     "layer 'x' \\(Softmax\\): axis 4 out of range"),
    ('layer { name: "x" type: "SoftmaxWithLoss" bottom: "data" top: "x" }', "layer 'x' \\(SoftmaxWithLoss\\): takes 2 bottom"),
    ('layer { name: "x" type: "Dropout" bottom: "data" top: "x" dropout_param { dropout_ratio: 1 } }', "dropout_ratio"),
])
def test_bad_prototxt_errors_name_the_layer(layers, msg):
    with pytest.raises(FcnkitError, match=msg):
        make(DATA + LABEL + layers)


def test_bad_constructor_arguments():
    with pytest.raises(FcnkitError, match="phase must be TRAIN or TEST"):
        make(phase="val")
    with pytest.raises(FcnkitError, match="amp must be"):
        make(amp="int8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cpu, gpu = make(), make(device="cuda")
    randomize(cpu, seed=11)
    gpu.copy_from(cpu.to_weights())
    for net in (cpu, gpu):
        feed(net, seed=12)
    assert gpu.forward_backward() == pytest.approx(cpu.forward_backward(), rel=1e-4)
    assert gpu.blobs["data"].tensor.device.type == "cpu"        # inputs stay host blobs
    assert gpu.blobs["score"].tensor.device.type == "cuda"
    for a, b in zip(cpu.learnable_params(), gpu.learnable_params()):
        np.testing.assert_allclose(b.diff, a.diff, rtol=1e-3, atol=1e-5)
