"""Bilinear upsampling kernels for Deconvolution layers (the FCN reference's `interp`).

FCN upsamples class scores with Deconvolution layers initialised to bilinear interpolation.
A group-1 layer with as many inputs as outputs gets the kernel on its channel diagonal (each
class upsampled on its own; other entries zero); a layer with one output channel per input
(out == 1, or group == channels) gets the kernel on every slice, as Caffe's bilinear filler.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2

from .caffemodel import Weights
from .fillers import bilinear_kernel
from netgen.legacy import upgrade_net


def upsample_filt(size: int) -> np.ndarray:
    """The (size, size) bilinear kernel: outer product of a tent centred on the kernel.

    factor = ceil(size / 2); centre (size - 1) / 2; value (1 - |x - c| / f)(1 - |y - c| / f).
    """
    if size < 1:
        raise FcnkitError(f"kernel size must be positive, got {size}")
    factor = (size + 1) // 2
    center = (size - 1) / 2
    ramp = 1 - np.abs(np.arange(size) - center) / factor
    return np.outer(ramp, ramp).astype(np.float32)


def bilinear_weights(shape: tuple[int, ...], group: int = 1, layer: str = "?") -> np.ndarray:
    """Deconvolution weights of `shape` (in, out/group, k, k) that upsample bilinearly."""
    if len(shape) != 4:
        raise FcnkitError(f"layer {layer!r}: interp needs 4-d weights, got "
                          f"{'x'.join(map(str, shape))}")
    m, k, h, w = shape
    if h != w:
        raise FcnkitError(f"layer {layer!r}: interp needs square kernels, got {h}x{w}")
    if group > 1:
        if not (group == m and k == 1):
            raise FcnkitError(f"layer {layer!r}: interp needs group 1 or group == channels "
                              f"(weights {m}x{k}x{h}x{w}, group {group})")
        return np.broadcast_to(bilinear_kernel(h), shape).copy()
    if m != k and k != 1:
        raise FcnkitError(f"layer {layer!r}: interp needs as many input as output channels, or "
                          f"one output channel (weights {m}x{k}x{h}x{w})")
    out = np.zeros(shape, dtype=np.float32)
    out[np.arange(m), np.arange(k) if k == m else 0] = upsample_filt(h)
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
