"""Mixed precision: bf16/fp16 forward, float32 parameters and update, fp16 loss scaling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netgen.errors import FcnkitError
from solver_helpers import linear_net_text, net_param, solver_param
from solvers.engine.solver import Solver


def run(amp, text="", iters=4, **net_options):
    sp = solver_param('base_lr: 0.02 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.001 '
                      'snapshot_after_train: false max_iter: 10', text)
    sp.train_net_param.CopyFrom(net_param(linear_net_text(**net_options)))
    torch.manual_seed(0)
    solver = Solver(sp, amp=amp, allow_python_modules=True)
    losses = []
    solver.step(iters, callback=lambda it, loss, *_: losses.append(loss))
    return solver, losses


def test_bf16_trains_close_to_float32():
    ref, ref_losses = run(None)
    bf16, losses = run("bf16")
    for p in bf16.net.learnable_params() + [h for h in bf16.history]:
        tensor = p.tensor if hasattr(p, "tensor") else p
        assert tensor.dtype == torch.float32
    np.testing.assert_allclose(losses, ref_losses, rtol=5e-2)
    for a, b in zip(bf16.net.learnable_params(), ref.net.learnable_params()):
        np.testing.assert_allclose(a.data, b.data, rtol=5e-2, atol=5e-3)


def test_fp16_loss_scale_backs_off_until_gradients_fit():
    """An unnormalised-style loss (x 3000) overflows fp16 gradients at scale 2^16: the solver
    halves the scale, redoes the iteration, and ends up with float32's update."""
    options = dict(count=1, loss_weight=3000.0)
    ref, ref_losses = run(None, "base_lr: 1e-5", **options)
    fp16, losses = run("fp16", "base_lr: 1e-5", **options)
    assert fp16._scale.scale < 2.0 ** 16  # it did overflow and back off
    assert fp16.iter == 4 and all(np.isfinite(losses))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-2)
    for a, b in zip(fp16.net.learnable_params(), ref.net.learnable_params()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-2, atol=1e-4)


def test_fp32_non_finite_gradient_is_divergence():
    with pytest.raises(FcnkitError, match="diverged"):
        run(None, "base_lr: 1e30", iters=10)
