"""Caffe's legacy net format (V1 `layers` with a type enum) to the current one and back.

The published ImageNet caffemodels (VGG16, CaffeNet) are V1 files; fcnkit works in the current
format and can write V1 again so that test files look like the published ones. The mapping
follows Caffe's upgrade rules: the `*_param` messages are shared, V1 `blobs_lr`,
`weight_decay`, `param` and `blob_share_mode` become the ParamSpec fields, and net-level
`input`/`input_dim`/`input_shape` become an Input layer named "input".
"""
from __future__ import annotations

from .errors import FcnkitError
from .proto import caffe_pb2

_V1 = caffe_pb2.V1LayerParameter

# V1 enum name -> current type string (Caffe's UpgradeV1LayerType).
_V1_NAMES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
V1_TYPE_NAMES: dict[int, str] = {_V1.LayerType.Value(k): v for k, v in _V1_NAMES.items()}
V1_TYPE_NAMES[_V1.NONE] = ""
_V1_ENUMS: dict[str, int] = {v: k for k, v in V1_TYPE_NAMES.items() if v}

# V0 (pre-2014) type strings, for the rare file whose blobs sit in a nested V0 `layer`.
V0_TYPE_NAMES: dict[str, str] = {
    "accuracy": "Accuracy", "bnll": "BNLL", "concat": "Concat", "conv": "Convolution",
    "data": "Data", "dropout": "Dropout", "euclidean_loss": "EuclideanLoss",
    "flatten": "Flatten", "hdf5_data": "HDF5Data", "hdf5_output": "HDF5Output",
    "im2col": "Im2col", "images": "ImageData", "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct", "lrn": "LRN",
    "multinomial_logistic_loss": "MultinomialLogisticLoss", "pool": "Pooling", "relu": "ReLU",
    "sigmoid": "Sigmoid", "softmax": "Softmax", "softmax_loss": "SoftmaxWithLoss",
    "split": "Split", "tanh": "TanH", "window_data": "WindowData",
}

_COMMON = ("name", "bottom", "top", "include", "exclude", "loss_weight")
# `*_param` messages present in both layer formats with the same message type.
_SHARED_PARAMS = tuple(
    f.name for f in _V1.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.message_type is not None
    and f.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    and caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name[f.name].message_type == f.message_type)


def v1_type_enum(type_name: str, where: str = "") -> int:
    """The V1 enum value of a current type string; FcnkitError if V1 had no such layer."""
    try:
        return _V1_ENUMS[type_name]
    except KeyError:
        raise FcnkitError(f"{where}layer type {type_name!r} has no legacy V1 equivalent "
                          "(write the current format instead)") from None


def is_repeated(field) -> bool:
    # protobuf >= 5.28 has is_repeated; `label` is gone in protobuf 7.
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def _copy_fields(src, dst, names) -> None:
    for name in names:
        field = src.DESCRIPTOR.fields_by_name[name]
        if is_repeated(field):
            getattr(dst, name).extend(getattr(src, name))
        elif src.HasField(name):
            if field.message_type is not None:
                getattr(dst, name).CopyFrom(getattr(src, name))
            else:
                setattr(dst, name, getattr(src, name))


def upgrade_v1_layer(v1: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    """A V1 layer as a current LayerParameter (blobs included)."""
    layer = caffe_pb2.LayerParameter()
    _copy_fields(v1, layer, _COMMON + _SHARED_PARAMS)
    layer.type = V1_TYPE_NAMES.get(v1.type, "")
    if not layer.type and v1.HasField("layer"):
        layer.type = V0_TYPE_NAMES.get(v1.layer.type, v1.layer.type)
    if not layer.name and v1.HasField("layer"):
        layer.name = v1.layer.name
    layer.blobs.extend(v1.blobs)
    per_param = [("name", v1.param), ("share_mode", v1.blob_share_mode),
                 ("lr_mult", v1.blobs_lr), ("decay_mult", v1.weight_decay)]
    for attr, values in per_param:
        for i, value in enumerate(values):
            while len(layer.param) <= i:
                layer.param.add()
            setattr(layer.param[i], attr, value)
    return layer


def downgrade_layer(layer: caffe_pb2.LayerParameter) -> caffe_pb2.V1LayerParameter:
    """A current layer as V1; FcnkitError for types or options V1 cannot express."""
    where = f"layer {layer.name!r}: "
    v1 = _V1()
    v1.type = v1_type_enum(layer.type, where)
    _copy_fields(layer, v1, _COMMON + _SHARED_PARAMS)
    extra = {f.name for f, _ in layer.ListFields()} - set(_COMMON + _SHARED_PARAMS) \
        - {"type", "param", "blobs", "phase"}  # phase is run-time state Caffe sets, not stored in V1
    if extra:
        raise FcnkitError(f"{where}option(s) {', '.join(sorted(extra))} have no legacy V1 "
                          "equivalent")
    v1.blobs.extend(layer.blobs)
    specs = list(layer.param)
    if any(p.name for p in specs):
        v1.param.extend(p.name for p in specs)
    if any(p.HasField("share_mode") for p in specs):
        v1.blob_share_mode.extend(p.share_mode for p in specs)
    if any(p.HasField("lr_mult") or p.HasField("decay_mult") for p in specs):
        v1.blobs_lr.extend(p.lr_mult for p in specs)
        v1.weight_decay.extend(p.decay_mult for p in specs)
    return v1


def upgrade_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of `net` in the current format (V1 layers and net-level inputs upgraded)."""
    if net.layers and net.layer:
        raise FcnkitError(f"net {net.name!r} mixes V1 `layers` and current `layer` fields")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.ClearField("layers")
    out.ClearField("input")
    out.ClearField("input_dim")
    out.ClearField("input_shape")
    out.ClearField("layer")
    if net.input_shape or net.input_dim:
        out.layer.append(_input_layer(net))
    out.layer.extend(net.layer)
    out.layer.extend(upgrade_v1_layer(v1) for v1 in net.layers)
    return out


def _input_layer(net: caffe_pb2.NetParameter) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    layer.top.extend(net.input)
    for i in range(len(net.input)):
        shape = layer.input_param.shape.add()
        if net.input_shape:
            shape.CopyFrom(net.input_shape[i])
        else:
            dims = list(net.input_dim[4 * i:4 * i + 4])
            if len(dims) != 4:
                raise FcnkitError(f"net {net.name!r}: input {net.input[i]!r} needs 4 input_dim "
                                  "values")
            shape.dim.extend(dims)
    return layer


def downgrade_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of `net` in V1 form; Input layers become net-level input/input_dim."""
    net = upgrade_net(net)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.ClearField("layer")
    shapes = []
    for layer in net.layer:
        if layer.type == "Input":
            own = list(layer.input_param.shape)
            if len(own) == 1:
                own *= len(layer.top)  # one shape stands for every top
            out.input.extend(layer.top)
            shapes.extend(own)
        else:
            out.layers.append(downgrade_layer(layer))
    if all(len(s.dim) == 4 for s in shapes):
        for s in shapes:
            out.input_dim.extend(s.dim)
    else:
        out.input_shape.extend(shapes)
    return out
