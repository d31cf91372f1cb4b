"""Parameter shapes of a net's layers and the fillers Caffe would initialise them with.

Shapes come from netgen.shapes (Caffe's Reshape rules). Surgery adds what filling a target
net needs: the filler of each learnable blob, legacy V1 nets upgraded first, and sizes for
data layers the prototxt does not size (Python, Data...): `input_channels` channels for
their first top (1 for the others, e.g. labels) and `input_size` pixels. Without an
input_size, shapes are computed at two sizes; a parameter shape that differs between them
(an InnerProduct over a data-sized input) is an error asking for the size.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from netgen import shapes as netgen_shapes
from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2

from netgen.legacy import upgrade_net

_PROBE_SIZES = ((500, 500), (532, 532))  # two sizes, 32 apart, for data layers of no size
Filler = caffe_pb2.FillerParameter


@dataclass(frozen=True)
class Param:
    """One learnable blob of a layer: its shape and the filler Caffe initialises it with."""
    shape: tuple[int, ...]
    filler: caffe_pb2.FillerParameter


def _given(msg, name: str, default: float = 0.0) -> caffe_pb2.FillerParameter:
    """The filler set in the prototxt, or Caffe's default for that blob (a constant)."""
    return getattr(msg, name) if msg.HasField(name) else Filler(type="constant", value=default)


def _weights_and_bias(field: str) -> Callable:
    return lambda layer: [_given(getattr(layer, field), "weight_filler"),
                          _given(getattr(layer, field), "bias_filler")]


# Layer type -> fillers of its blobs in order (Caffe's LayerSetUp defaults where unset).
FILLERS: dict[str, Callable[[caffe_pb2.LayerParameter], list[caffe_pb2.FillerParameter]]] = {
    "Convolution": _weights_and_bias("convolution_param"),
    "Deconvolution": _weights_and_bias("convolution_param"),
    "InnerProduct": _weights_and_bias("inner_product_param"),
    "Embed": _weights_and_bias("embed_param"),
    "Scale": lambda layer: ([_given(layer.scale_param, "filler", 1.0)]
                            if len(layer.bottom) == 1 else [])  # 2 bottoms: bias blob only
    + [_given(layer.scale_param, "bias_filler")],
    "Bias": lambda layer: [_given(layer.bias_param, "filler")],
    "PReLU": lambda layer: [_given(layer.prelu_param, "filler", 0.25)],
}


def _sizes(net: caffe_pb2.NetParameter, input_channels: int | dict[str, int],
           size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Shapes (batch 1) for the tops of source layers whose size only the data knows
    (netgen.shapes.data_sizes); channels named for a top no source layer makes are an error."""
    sizes = netgen_shapes.data_sizes(net, size, input_channels)
    sources = [*net.input, *(top for layer in net.layer if not layer.bottom for top in layer.top)]
    unknown = sorted(set(input_channels) - set(sources)) if isinstance(input_channels, dict) else []
    if unknown:
        raise FcnkitError(f"input channels given for {unknown[0]!r}, which is not a top of an "
                          f"input or data layer (those tops: {', '.join(sources) or 'none'})")
    return sizes


def param_shapes(net: caffe_pb2.NetParameter, *, input_channels: int | dict[str, int] = 3,
                 input_size: tuple[int, int] | None = None) -> "OrderedDict[str, list[tuple]]":
    """Layer name -> parameter shapes, e.g. {'fc6': [(4096, 512, 7, 7), (4096,)]}."""
    net = upgrade_net(net)
    probes = [tuple(input_size)] if input_size else list(_PROBE_SIZES)
    results = [netgen_shapes.param_shapes(net, _sizes(net, input_channels, size))
               for size in probes]
    for name, shapes in results[0].items():
        if any(other.get(name) != shapes for other in results[1:]):
            raise FcnkitError(f"layer {name!r}: its parameter shapes depend on the input size, "
                              "which the net does not state (give the input size, "
                              "--input-size HxW)")
    return OrderedDict((name, [tuple(s) for s in shapes]) for name, shapes in results[0].items())


def net_params(net: caffe_pb2.NetParameter, **options) -> "OrderedDict[str, list[Param]]":
    """Layer name -> its learnable blobs (shape + filler), for layers that have any."""
    net = upgrade_net(net)
    layers = {layer.name: layer for layer in net.layer}
    out: OrderedDict[str, list[Param]] = OrderedDict()
    for name, shapes in param_shapes(net, **options).items():
        rule = FILLERS.get(layers[name].type)
        fillers = rule(layers[name]) if rule else []
        fillers += [Filler(type="constant")] * (len(shapes) - len(fillers))  # zeros (BatchNorm)
        out[name] = [Param(shape, filler) for shape, filler in zip(shapes, fillers)]
    return out


def blob_shapes(net: caffe_pb2.NetParameter, *, input_channels: int | dict[str, int] = 3,
                input_size: tuple[int, int] | None = None) -> dict[str, tuple | None]:
    """Blob name -> shape (data layers of no stated size at `input_size`, else 500x500)."""
    net = upgrade_net(net)
    size = tuple(input_size) if input_size else _PROBE_SIZES[0]
    return dict(netgen_shapes.blob_shapes(net, _sizes(net, input_channels, size)))
