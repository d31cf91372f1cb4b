"""Caffe's weight fillers in numpy, seeded, for parameters a transplant leaves at init.

Formulas follow caffe/filler.hpp at BVLC master (fan_in = count / shape[0], fan_out =
count / shape[1]; the bilinear kernel as fixed in commit 888597e, 2017). The random streams are
numpy's, not Caffe's, so values match Caffe's in distribution, not bit for bit.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2

Filler = caffe_pb2.FillerParameter


def _legacy(shape: tuple[int, ...], axis: int) -> int:
    """Caffe's num()/channels(): the axis if the blob has it, else 1."""
    return shape[axis] if axis < len(shape) else 1


def _fan(param: Filler, shape: tuple[int, ...]) -> float:
    count = math.prod(shape)
    fan_in = count // _legacy(shape, 0)
    fan_out = count // _legacy(shape, 1)
    return {Filler.FAN_IN: fan_in, Filler.FAN_OUT: fan_out,
            Filler.AVERAGE: (fan_in + fan_out) / 2.0}[param.variance_norm]


def _constant(param, shape, rng):
    return np.full(shape, param.value, dtype=np.float32)


def _uniform(param, shape, rng, low=None, high=None):
    low = param.min if low is None else low
    high = param.max if high is None else high
    return rng.random(size=shape, dtype=np.float32) * np.float32(high - low) + np.float32(low)


def _normal(shape, rng, mean: float, std: float) -> np.ndarray:
    return rng.standard_normal(size=shape, dtype=np.float32) * np.float32(std) + np.float32(mean)


def _gaussian(param, shape, rng):
    data = _normal(shape, rng, param.mean, param.std)
    if param.sparse >= 0:  # keep each weight with probability sparse / num_outputs
        keep = rng.random(size=shape) < param.sparse / _legacy(shape, 0)
        data *= keep
    return data


def _positive_unitball(param, shape, rng):
    data = _uniform(param, shape, rng, 0.0, 1.0).reshape(_legacy(shape, 0), -1)
    return (data / data.sum(axis=1, keepdims=True)).reshape(shape)


def _xavier(param, shape, rng):
    scale = math.sqrt(3.0 / _fan(param, shape))
    return _uniform(param, shape, rng, -scale, scale)


def _msra(param, shape, rng):
    return _normal(shape, rng, 0.0, math.sqrt(2.0 / _fan(param, shape)))


def bilinear_kernel(size: int) -> np.ndarray:
    """The (size, size) bilinear upsampling kernel: Caffe's `bilinear` filler for one slice,
    which is also the FCN reference's `upsample_filt` (surgery.interp).

    Caffe fills x = i % K, y = (i / K) % K with f = ceil(K / 2), c = (K - 1) / (2f):
    (1 - |x/f - c|)(1 - |y/f - c|), a tent centred on pixel (K - 1) / 2, symmetric for every K.
    Caffe before commit 888597e (so Caffe 1.0) used c = (2f - 1 - f % 2) / (2f), which is
    off-centre whenever K != 2f - f % 2 (K = 3, 6, 7, 10, 11, ..., 63): a net trained with
    that Caffe's filler started from another kernel at those sizes. Raises FcnkitError for
    size < 1.
    """
    if size < 1:
        raise FcnkitError(f"kernel size must be positive, got {size}")
    f = math.ceil(size / 2)
    c = (size - 1) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(size) / f - c)
    return np.outer(ramp, ramp).astype(np.float32)


def _bilinear(param, shape, rng):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise FcnkitError(f"bilinear filler needs a 4-d blob with square kernels, got "
                          f"{'x'.join(map(str, shape))}")
    return np.broadcast_to(bilinear_kernel(shape[3]), shape).copy()


FILLERS: dict[str, Callable] = {
    "constant": _constant, "uniform": _uniform, "gaussian": _gaussian,
    "positive_unitball": _positive_unitball, "xavier": _xavier, "msra": _msra,
    "bilinear": _bilinear,
}


def fill(param: Filler | None, shape, rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """A new float32 array of `shape` filled as Caffe's filler `param` would (default: zeros).

    `rng` is a numpy Generator or a seed, so the same seed gives the same weights.
    """
    param = param if param is not None else Filler()
    shape = tuple(int(d) for d in shape)
    kind = FILLERS.get(param.type)
    if kind is None:
        raise FcnkitError(f"unknown filler type {param.type!r} (choose from "
                          f"{', '.join(FILLERS)})")
    if param.sparse != -1 and param.type != "gaussian":
        raise FcnkitError(f"filler {param.type!r} does not support sparse")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype=np.float32)
    return np.asarray(kind(param, shape, rng), dtype=np.float32)
