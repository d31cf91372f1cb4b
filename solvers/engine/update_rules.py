"""Caffe's per-parameter update rules (ComputeUpdateValue of each solver), on torch tensors.

A rule receives the regularised gradient `g` (overwritten in place with the update that is
then subtracted from the weights, as Caffe reuses the diff), the parameter's history slots,
the local rate (policy rate x lr_mult), the solver parameter and the iteration. History is
laid out as Caffe saves it: slot 0 for every parameter, then slot 1 for every parameter
(AdaDelta: squared gradients then squared updates; Adam: m then v).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from netgen.errors import FcnkitError

Rule = Callable[[torch.Tensor, Sequence[torch.Tensor], float, object, int], None]


def sgd(g: torch.Tensor, hist: Sequence[torch.Tensor], rate: float, p, it: int) -> None:
    """h = momentum h + rate g; update = h (the rate lives inside the history)."""
    h = hist[0]
    h.mul_(p.momentum).add_(g, alpha=rate)
    g.copy_(h)


def nesterov(g: torch.Tensor, hist: Sequence[torch.Tensor], rate: float, p, it: int) -> None:
    """h' = momentum h + rate g; update = (1 + momentum) h' - momentum h."""
    h = hist[0]
    previous = h.clone()
    h.mul_(p.momentum).add_(g, alpha=rate)
    torch.mul(h, 1.0 + p.momentum, out=g)
    g.add_(previous, alpha=-p.momentum)


def adagrad(g: torch.Tensor, hist: Sequence[torch.Tensor], rate: float, p, it: int) -> None:
    """h += g^2; update = rate g / (sqrt(h) + delta)."""
    h = hist[0]
    h.addcmul_(g, g)
    g.div_(h.sqrt().add_(p.delta)).mul_(rate)


def rmsprop(g: torch.Tensor, hist: Sequence[torch.Tensor], rate: float, p, it: int) -> None:
    """h = rms_decay h + (1 - rms_decay) g^2; update = rate g / (sqrt(h) + delta)."""
    h = hist[0]
    h.mul_(p.rms_decay).addcmul_(g, g, value=1.0 - p.rms_decay)
    g.div_(h.sqrt().add_(p.delta)).mul_(rate)


def adadelta(g: torch.Tensor, hist: Sequence[torch.Tensor], rate: float, p, it: int) -> None:
    """h_g = m h_g + (1-m) g^2; g *= sqrt((h_u + delta) / (h_g + delta));
    h_u = m h_u + (1-m) g^2; update = rate g."""
    h_grad, h_update = hist
    m = p.momentum
    h_grad.mul_(m).addcmul_(g, g, value=1.0 - m)
    g.mul_(((h_update + p.delta) / (h_grad + p.delta)).sqrt_())
    h_update.mul_(m).addcmul_(g, g, value=1.0 - m)
    g.mul_(rate)


def adam(g: torch.Tensor, hist: Sequence[torch.Tensor], rate: float, p, it: int) -> None:
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; t = iter + 1;
    update = rate sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + delta)."""
    m, v = hist
    b1, b2 = p.momentum, p.momentum2
    t = it + 1
    correction = float(np.float32(math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)))
    m.mul_(b1).add_(g, alpha=1.0 - b1)
    v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
    torch.div(m, v.sqrt().add_(p.delta), out=g)
    g.mul_(float(np.float32(rate * correction)))


def _momentum_zero(name: str):
    return ("momentum", lambda p: p.momentum == 0, f"Momentum cannot be used with {name}")


# type -> (rule, history slots per parameter, [(option, check, message)]) from Caffe's CHECKs.
SOLVER_TYPES: dict[str, tuple[Rule, int, list]] = {
    "SGD": (sgd, 1, []),
    "Nesterov": (nesterov, 1, []),
    "AdaGrad": (adagrad, 1, [_momentum_zero("AdaGrad")]),
    "RMSProp": (rmsprop, 1, [
        _momentum_zero("RMSProp"),
        ("rms_decay", lambda p: 0 <= p.rms_decay < 1, "rms_decay must be in [0, 1)")]),
    "AdaDelta": (adadelta, 2, []),
    "Adam": (adam, 2, []),
}

# Legacy SolverParameter.solver_type enum values, in Caffe's order.
LEGACY_SOLVER_TYPES = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]


def check_solver_type(name: str, param, where: str = "solver") -> None:
    """Raise FcnkitError for an unknown type or options that fail Caffe's constructor CHECKs."""
    if name not in SOLVER_TYPES:
        raise FcnkitError(f"{where}: unsupported solver type {name!r} "
                          f"(supported: {', '.join(SOLVER_TYPES)})")
    for option, ok, message in SOLVER_TYPES[name][2]:
        if not ok(param):
            raise FcnkitError(f"{where}: {option}: {message} (got {getattr(param, option)})")
