"""Caffe's weight fillers, on torch's global RNG (seed with torch.manual_seed).

Interim copy for the engine until surgery/fillers.py provides the shared implementation.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from netgen.errors import FcnkitError


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    count = math.prod(shape)
    fan_in = count / shape[0] if shape else 1.0
    fan_out = count / shape[1] if len(shape) > 1 else float(count)
    return fan_in, fan_out


def _norm_n(fp, shape) -> float:
    fan_in, fan_out = _fans(shape)
    return {0: fan_in, 1: fan_out, 2: (fan_in + fan_out) / 2}[fp.variance_norm]


def _constant(fp, shape):
    return torch.full(shape, fp.value, dtype=torch.float64)


def _uniform(fp, shape):
    return torch.empty(shape, dtype=torch.float64).uniform_(fp.min, fp.max)


def _gaussian(fp, shape):
    t = torch.empty(shape, dtype=torch.float64).normal_(fp.mean, fp.std)
    if fp.sparse >= 0:
        keep = fp.sparse / shape[0]
        t *= torch.bernoulli(torch.full(shape, min(keep, 1.0), dtype=torch.float64))
    return t


def _positive_unitball(fp, shape):
    t = torch.rand(shape, dtype=torch.float64)
    rows = t.reshape(shape[0], -1)
    rows /= rows.sum(dim=1, keepdim=True)
    return t


def _xavier(fp, shape):
    scale = math.sqrt(3.0 / _norm_n(fp, shape))
    return torch.empty(shape, dtype=torch.float64).uniform_(-scale, scale)


def _msra(fp, shape):
    return torch.empty(shape, dtype=torch.float64).normal_(0.0, math.sqrt(2.0 / _norm_n(fp, shape)))


def _bilinear(fp, shape):
    if len(shape) != 4 or shape[2] != shape[3]:
        raise FcnkitError(f"bilinear filler needs a 4-D square kernel, got shape {shape}")
    k = shape[3]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    og = torch.arange(k, dtype=torch.float64)
    profile = 1 - (og / f - c).abs()
    return (profile[:, None] * profile[None, :]).expand(shape).clone()


FILLERS: dict[str, Callable] = {
    "constant": _constant, "uniform": _uniform, "gaussian": _gaussian,
    "positive_unitball": _positive_unitball, "xavier": _xavier, "msra": _msra,
    "bilinear": _bilinear,
}


def fill(fp, shape: tuple[int, ...], where: str) -> torch.Tensor:
    """A float64 CPU tensor of `shape` filled as Caffe's FillerParameter `fp` says."""
    shape = tuple(int(d) for d in shape)
    fn = FILLERS.get(fp.type)
    if fn is None:
        raise FcnkitError(f"{where}: unknown filler type {fp.type!r} "
                          f"(known: {', '.join(sorted(FILLERS))})")
    if fp.sparse >= 0 and fp.type != "gaussian":
        raise FcnkitError(f"{where}: filler {fp.type!r} does not support sparse")
    return fn(fp, shape)
