"""A pycaffe-compatible NetSpec: write Caffe nets as Python expressions.

    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 224, 224]))
    n.conv1 = L.Convolution(n.data, kernel_size=3, num_output=64,
                            param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    print(n.to_proto())

The layer vocabulary is not a list in this file: it is read from the schema. Every
`<Type>Parameter` message the LayerParameter carries as a `*_param` field makes `L.<Type>` valid
and routes its keyword arguments into that message, so a script written for pycaffe's NetSpec ports
by changing only its imports. Mistakes raise FcnkitError naming the layer and option; each is
also the class pycaffe raises for it (an input that is not a Top: TypeError, as soon as the
layer is made; an unknown option: AttributeError; a bad value: protobuf's TypeError or
ValueError; checked when the net is turned into a proto), so a ported `except` still works.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Iterable

from google.protobuf.descriptor import FieldDescriptor

from .errors import FcnkitAttributeError, FcnkitError, FcnkitTypeError, FcnkitValueError, error_like
from .proto import caffe_pb2

# Layer types whose parameters live in a message not named after them.
_PARAM_ALIASES: dict[str, tuple[str, ...]] = {
    "Deconvolution": ("convolution_param",),
    "SoftmaxWithLoss": ("softmax_param",),
    "SigmoidCrossEntropyLoss": ("sigmoid_param",),
    "MultinomialLogisticLoss": (),
    "EuclideanLoss": (),
    "Im2col": ("convolution_param",),
    "LSTM": ("recurrent_param",),
    "RNN": ("recurrent_param",),
}
# Layer types Caffe knows that take no parameter message of their own.
_PLAIN_TYPES = ("AbsVal", "BNLL", "Silence", "Split")


def _param_fields() -> dict[str, tuple[str, ...]]:
    """Map each Caffe layer type to the LayerParameter `*_param` fields its options go to."""
    found: dict[str, tuple[str, ...]] = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            msg = field.message_type.name
            if msg.endswith("Parameter"):
                found[msg[: -len("Parameter")]] = (field.name,)
    for generic in ("Transformation", "Loss"):  # shared by many types, set explicitly
        found.pop(generic, None)
    found.update(_PARAM_ALIASES)
    for name in _PLAIN_TYPES:
        found.setdefault(name, ())
    return found


PARAM_FIELDS: dict[str, tuple[str, ...]] = _param_fields()
LAYER_TYPES: frozenset[str] = frozenset(PARAM_FIELDS)


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 5.28 has is_repeated; `label` is gone in protobuf 7.
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def _enum_value(field: FieldDescriptor, value: Any, where: str) -> Any:
    if isinstance(value, str) and field.enum_type is not None:
        try:
            return field.enum_type.values_by_name[value].number
        except KeyError:
            names = ", ".join(field.enum_type.values_by_name)
            raise FcnkitValueError(f"{where}: {field.name} must be one of {names}, "
                                   f"not {value!r}") from None
    return value


def assign_proto(proto: Any, name: str, value: Any, where: str = "") -> None:
    """Set proto.name from plain Python data: dicts fill messages, lists fill repeated fields."""
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise FcnkitAttributeError(f"{where}: {proto.DESCRIPTOR.name} has no option {name!r}")
    inner = f"{where}.{name}" if where else name
    is_repeated = _is_repeated(field)
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if is_repeated and not isinstance(value, (list, tuple)):
        value = [value]
    try:
        if is_repeated and is_message:
            for item in value:
                _fill_message(getattr(proto, name).add(), item, inner)
        elif is_repeated:
            getattr(proto, name).extend(_enum_value(field, v, inner) for v in value)
        elif is_message:
            _fill_message(getattr(proto, name), value, inner)
        else:
            setattr(proto, name, _enum_value(field, value, inner))
    except (TypeError, ValueError) as e:
        if isinstance(e, FcnkitError):
            raise
        raise error_like(type(e), f"{inner}: bad value {value!r}: {e}") from None


def _fill_message(msg: Any, value: Any, where: str) -> None:
    if isinstance(value, type(msg)):
        msg.CopyFrom(value)
        return
    if not isinstance(value, dict):
        raise FcnkitAttributeError(f"{where}: expected a dict of {msg.DESCRIPTOR.name} options, "
                                   f"got {value!r}")
    for k, v in value.items():
        assign_proto(msg, k, v, where)


class Top:
    """One output blob of a Function; the thing NetSpec attributes hold."""

    def __init__(self, fn: "Function", n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """The net that computes this top (and everything it depends on)."""
        return to_proto(self)

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer application: type, inputs and the options given as keyword arguments."""

    def __init__(self, type_name: str, inputs: Iterable[Top], params: dict[str, Any]):
        self.type_name = type_name
        self.inputs = tuple(inputs)
        for i, inp in enumerate(self.inputs):
            if not isinstance(inp, Top):  # pycaffe's words and class (its test_net_spec checks both)
                raise FcnkitTypeError(f"{type_name} input {i} is not a Top (type is {type(inp)})")
        self.params = dict(params)
        self.ntop = int(self.params.pop("ntop", 1))
        self.in_place = bool(self.params.pop("in_place", False))
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names: dict, autonames: Counter) -> str:
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers: OrderedDict, names: dict, autonames: Counter) -> None:
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter(type=self.type_name, bottom=bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._get_top_name(t, names, autonames) for t in self.tops)
        layer.name = self._get_name(names, autonames)
        self.fill(layer)
        layers[self] = layer

    def fill(self, layer: caffe_pb2.LayerParameter) -> None:
        """Write this function's options into `layer` (type-specific message first, as pycaffe)."""
        where = f"layer {layer.name} ({self.type_name})"
        if self.type_name not in LAYER_TYPES:
            raise FcnkitError(f"{where}: unknown layer type {self.type_name!r}")
        for key, value in self.params.items():
            assign_proto(self._target(layer, key, where), key, value, where)

    def _target(self, layer: caffe_pb2.LayerParameter, key: str, where: str) -> Any:
        """Where option `key` belongs: the type's own parameter message first, as pycaffe does."""
        if not key.endswith("param"):
            for field in PARAM_FIELDS[self.type_name]:
                sub = getattr(layer, field)
                if key in sub.DESCRIPTOR.fields_by_name:
                    return sub
        if key in layer.DESCRIPTOR.fields_by_name:
            return layer
        raise FcnkitAttributeError(f"{where}: unknown option {key!r}")


class NetSpec:
    """Collects named tops; attribute names become top (and layer) names in the proto."""

    def __init__(self) -> None:
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value: Top) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str) -> Top:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key: str, value: Top) -> None:
        self.__setattr__(key, value)

    def __getitem__(self, item: str) -> Top:
        return self.__getattr__(item)

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def keys(self) -> list[str]:
        return list(self.tops.keys())

    def vals(self) -> list[Top]:
        return list(self.tops.values())

    def to_proto(self) -> caffe_pb2.NetParameter:
        names = {v: k for k, v in self.tops.items()}
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops: Top) -> caffe_pb2.NetParameter:
    """The net computing the given tops, with automatic names (as pycaffe's to_proto)."""
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Layers:
    """`L.<Type>(*bottoms, **options)` makes a layer; one top returns a Top, several a tuple."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args: Top, **kwargs: Any):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        return layer_fn


class Parameters:
    """`P.Pooling.MAX`: the `<Type>Parameter` message class, for its enum values."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(caffe_pb2, name + "Parameter")
        except AttributeError:
            raise AttributeError(f"no {name}Parameter in the Caffe schema") from None


layers = L = Layers()
params = P = Parameters()
