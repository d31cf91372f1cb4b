"""Each Caffe update rule, on torch tensors, against a numpy transcription of Caffe's formula."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2
from solver_helpers import np_adadelta, np_adagrad, np_adam, np_nesterov, np_rmsprop, np_sgd
from solvers.engine.update_rules import SOLVER_TYPES, check_solver_type


REFERENCE = {
    "SGD": (np_sgd, dict(momentum=0.9)),
    "Nesterov": (np_nesterov, dict(momentum=0.95)),
    "AdaGrad": (np_adagrad, dict(delta=1e-6)),
    "RMSProp": (np_rmsprop, dict(rms_decay=0.9, delta=1e-6)),
    "AdaDelta": (np_adadelta, dict(momentum=0.9, delta=1e-6)),
    "Adam": (np_adam, dict(momentum=0.9, momentum2=0.999, delta=1e-8)),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_rule_matches_numpy_for_several_steps(name):
    reference, fields = REFERENCE[name]
    p = caffe_pb2.SolverParameter(type=name, **fields)
    check_solver_type(name, p)
    rule, slots, _ = SOLVER_TYPES[name]
    assert slots == (2 if name in ("AdaDelta", "Adam") else 1)
    rng = np.random.default_rng(7)
    hist_np = [np.zeros((3, 4)) for _ in range(slots)]
    hist_t = [torch.zeros(3, 4) for _ in range(slots)]
    for it in range(6):
        g = rng.standard_normal((3, 4)).astype(np.float32)
        rate = [0.1, 0.1, 0.05, 0.05, 0.01, 0.01][it]
        expected = reference(g.astype(np.float64), hist_np, rate, p, it)
        g_t = torch.from_numpy(g.copy())
        rule(g_t, hist_t, rate, p, it)
        np.testing.assert_allclose(g_t.numpy(), expected, rtol=2e-5, atol=1e-9)
        for h_t, h_np in zip(hist_t, hist_np):
            np.testing.assert_allclose(h_t.numpy(), h_np, rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("name, fields, option", [
    ("AdaGrad", dict(momentum=0.9), "momentum"),
    ("RMSProp", dict(momentum=0.9), "momentum"),
    ("RMSProp", dict(rms_decay=1.0), "rms_decay"),
    ("LBFGS", dict(), "LBFGS"),
])
def test_caffe_constructor_checks(name, fields, option):
    with pytest.raises(FcnkitError, match=option):
        check_solver_type(name, caffe_pb2.SolverParameter(**fields))
