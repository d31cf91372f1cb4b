"""Change the number of classes a scoring layer predicts, keeping what was learned.

Fine-tuning a trained FCN on a data set with more classes (VOC's 21 -> PASCAL-Context's 60)
keeps the first k class filters and gives the new ones the filler's values (zeros by
default, so new classes start neutral). For a Deconvolution the class axis is both its input
and output axis; an upsampler that is bilinear on the diagonal stays bilinear.
"""
from __future__ import annotations

import numpy as np

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2

from .caffemodel import Weights
from .fillers import fill
from .interp import bilinear_weights


def _class_axes(weights: Weights, layer: str, k: int) -> tuple[int, ...]:
    """Axes of the weight blob that index classes."""
    blob = weights[layer][0]
    if weights.types.get(layer) == "Deconvolution" and blob.ndim == 4 and blob.shape[0] == k \
            and blob.shape[1] == k:
        return (0, 1)
    if weights.types.get(layer) == "Deconvolution" and blob.ndim == 4 and blob.shape[1] == 1:
        return (0,)  # one output channel per class (group == channels)
    if weights.types.get(layer) == "Deconvolution":
        raise FcnkitError(f"layer {layer!r}: cannot tell the class axes of Deconvolution "
                          f"weights {'x'.join(map(str, blob.shape))}")
    return (0,)


def _resize(array: np.ndarray, axes: tuple[int, ...], new: int,
            filler: caffe_pb2.FillerParameter | None, rng) -> np.ndarray:
    shape = tuple(new if i in axes else d for i, d in enumerate(array.shape))
    out = fill(filler, shape, rng)
    keep = tuple(slice(0, min(d, new)) if i in axes else slice(None)
                 for i, d in enumerate(array.shape))
    out[keep] = array[keep]
    return out


def expand_score(weights: Weights, layer: str, new_classes: int, *,
                 filler: caffe_pb2.FillerParameter | None = None, seed: int = 0) -> Weights:
    """A copy of `weights` where `layer` scores `new_classes` classes instead of k.

    The first min(k, new_classes) classes keep their weights and biases; new ones are drawn
    from `filler` (default: zeros). The stored net definition's num_output (and group, for a
    per-class Deconvolution) follows. Other layers' arrays are shared, not copied.
    """
    if layer not in weights:
        raise FcnkitError(f"layer {layer!r}: not in the weights (layers: "
                          f"{', '.join(weights) or 'none'})")
    if new_classes < 1:
        raise FcnkitError(f"new number of classes must be positive, not {new_classes}")
    arrays = weights[layer]
    k = arrays[0].shape[0]
    axes = _class_axes(weights, layer, k)
    rng = np.random.default_rng(seed)
    was_bilinear = axes == (0, 1) and np.array_equal(arrays[0], bilinear_weights(arrays[0].shape))
    out = weights.copy(deep=False)
    if was_bilinear:
        resized = [bilinear_weights((new_classes, new_classes, *arrays[0].shape[2:]))]
    else:
        resized = [_resize(arrays[0], axes, new_classes, filler, rng)]
    for i, extra in enumerate(arrays[1:], 1):
        if extra.shape[:1] != (k,):
            raise FcnkitError(f"layer {layer!r} blob {i}: shape {extra.shape} does not have "
                              f"{k} classes first")
        resized.append(_resize(extra, (0,), new_classes, filler, rng))
    out[layer] = resized
    if out.net is not None:
        _set_num_output(out.net, layer, k, new_classes)
    return out


def _set_num_output(net: caffe_pb2.NetParameter, layer: str, old: int, new: int) -> None:
    for definition in list(net.layer) + list(net.layers):
        if definition.name != layer:
            continue
        for field in ("convolution_param", "inner_product_param"):
            if definition.HasField(field):
                param = getattr(definition, field)
                param.num_output = new
                if field == "convolution_param" and param.group == old > 1:
                    param.group = new
