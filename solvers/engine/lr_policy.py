"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), one function per policy.

Each policy maps (solver parameter, iteration, current_step) to (rate, current_step).
`current_step` is state only `step` (recomputed) and `multistep` (advanced one stepvalue at
a time, hence saved in the solverstate) use. The rate is rounded to float32 as Caffe keeps it.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from netgen.errors import FcnkitError

Policy = Callable[[object, int, int], tuple[float, int]]


def _fixed(p, it: int, step: int) -> tuple[float, int]:
    return p.base_lr, step


def _step(p, it: int, step: int) -> tuple[float, int]:
    step = it // p.stepsize
    return p.base_lr * p.gamma ** step, step


def _exp(p, it: int, step: int) -> tuple[float, int]:
    return p.base_lr * p.gamma ** it, step


def _inv(p, it: int, step: int) -> tuple[float, int]:
    return p.base_lr * (1.0 + p.gamma * it) ** (-p.power), step


def _multistep(p, it: int, step: int) -> tuple[float, int]:
    # Caffe advances at most one stepvalue per call: the saved current_step matters on resume.
    if step < len(p.stepvalue) and it >= p.stepvalue[step]:
        step += 1
    return p.base_lr * p.gamma ** step, step


def _poly(p, it: int, step: int) -> tuple[float, int]:
    return p.base_lr * (1.0 - it / p.max_iter) ** p.power, step


def _sigmoid(p, it: int, step: int) -> tuple[float, int]:
    return p.base_lr / (1.0 + math.exp(-p.gamma * (it - p.stepsize))), step


# policy -> (function, [(option, check, requirement)]) : the CHECKs Caffe makes, as messages.
_NONNEG_GAMMA = ("gamma", lambda v: v >= 0, ">= 0")
_POS_STEPSIZE = ("stepsize", lambda v: v > 0, "> 0")
POLICIES: dict[str, tuple[Policy, list]] = {
    "fixed": (_fixed, []),
    "step": (_step, [_POS_STEPSIZE, _NONNEG_GAMMA]),
    "exp": (_exp, [_NONNEG_GAMMA]),
    "inv": (_inv, [_NONNEG_GAMMA]),
    "multistep": (_multistep, [_NONNEG_GAMMA]),
    "poly": (_poly, [("max_iter", lambda v: v > 0, "> 0")]),
    "sigmoid": (_sigmoid, [_NONNEG_GAMMA, _POS_STEPSIZE]),
}


def check_lr_policy(param, where: str = "solver") -> None:
    """Raise FcnkitError if lr_policy is unknown or its options break Caffe's CHECKs."""
    name = param.lr_policy
    if name not in POLICIES:
        raise FcnkitError(f"{where}: unsupported lr_policy {name!r} "
                          f"(supported: {', '.join(POLICIES)})")
    for option, ok, need in POLICIES[name][1]:
        if not ok(getattr(param, option)):
            raise FcnkitError(f"{where}: lr_policy {name!r} needs {option} {need}, "
                              f"got {getattr(param, option)}")


def learning_rate(param, it: int, current_step: int = 0) -> tuple[float, int]:
    """Return (rate at iteration `it`, updated current_step) for `param.lr_policy`."""
    rate, step = POLICIES[param.lr_policy][0](param, it, current_step)
    return float(np.float32(rate)), step
