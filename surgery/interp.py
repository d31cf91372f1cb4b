"""Bilinear upsampling kernels for Deconvolution layers (the FCN reference's `interp`).

FCN upsamples class scores with Deconvolution layers initialised to bilinear interpolation.
Every layer gets the same symmetric kernel (surgery.fillers.bilinear_kernel, the reference's
upsample_filt, centred on pixel (K - 1) / 2 for odd and even K alike), so one upsampling
written as a group-1 layer or as a grouped (channel-wise) layer computes the same output.
Where it goes: a layer with as many outputs as inputs gets it on each channel's own
input -> output slice (each class upsampled on its own; other entries zero), whatever its
group; a group-1 layer with one output channel gets it on every slice.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from netgen.errors import FcnkitError
from netgen.legacy import upgrade_net
from netgen.proto import caffe_pb2

from .caffemodel import Weights
from .fillers import bilinear_kernel as upsample_filt  # the reference's name for the kernel


def bilinear_weights(shape: tuple[int, ...], group: int = 1, layer: str = "?") -> np.ndarray:
    """Deconvolution weights of `shape` (Cin, Cout/group, K, K) that upsample bilinearly.

    Cout == Cin: input channel i feeds output channel i only (weight [i, i % (Cin/group)]).
    group 1 with Cout == 1: every input feeds the one output (the reference's k == 1 case).
    Raises FcnkitError for other shapes (non-square, not 4-d, channel counts that differ).
    """
    if len(shape) != 4:
        raise FcnkitError(f"layer {layer!r}: interp needs 4-d weights, got "
                          f"{'x'.join(map(str, shape))}")
    m, k, h, w = shape
    if h != w:
        raise FcnkitError(f"layer {layer!r}: interp needs square kernels, got {h}x{w}")
    if group < 1 or m % group:
        raise FcnkitError(f"layer {layer!r}: group {group} does not divide the {m} input "
                          "channels")
    if k * group != m and not (group == 1 and k == 1):
        raise FcnkitError(f"layer {layer!r}: interp needs as many input as output channels, "
                          f"or one output channel (weights {m}x{k}x{h}x{w}, group {group})")
    out = np.zeros(shape, dtype=np.float32)
    out[np.arange(m), np.arange(m) % k] = upsample_filt(h)
    return out


def interp(weights: Weights, layers: Iterable[str] | caffe_pb2.NetParameter) -> list[str]:
    """Set Deconvolution weights to bilinear upsampling, in place; return the layers set.

    `layers` is a list of layer names (group 1 assumed), or a net whose every Deconvolution
    layer is set (its group read from the net). A named layer the weights know as another
    type (a trained Convolution) is refused, not overwritten. Biases are left as they are.
    """
    if isinstance(layers, caffe_pb2.NetParameter):
        targets = [(layer.name, layer.convolution_param.group)
                   for layer in upgrade_net(layers).layer if layer.type == "Deconvolution"]
    else:
        targets = [(name, 1) for name in layers]
    for name, group in targets:
        if name not in weights:
            raise FcnkitError(f"layer {name!r}: no weights to set (not in the caffemodel)")
        kind = weights.types.get(name)
        if kind and kind != "Deconvolution":
            raise FcnkitError(f"layer {name!r} is a {kind} layer; interp sets only "
                              "Deconvolution layers")
        blob = weights[name][0]
        weights[name][0] = bilinear_weights(blob.shape, group, name)
    return [name for name, _ in targets]
