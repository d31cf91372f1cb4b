"""Each Caffe lr policy against its formula, written out independently here."""
from __future__ import annotations

import math

import pytest

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2
from solvers.engine.lr_policy import check_lr_policy, learning_rate


def solver_param(**fields) -> caffe_pb2.SolverParameter:
    p = caffe_pb2.SolverParameter(base_lr=0.01, **{k: v for k, v in fields.items() if k != "stepvalue"})
    p.stepvalue.extend(fields.get("stepvalue", []))
    return p


FORMULAS = {
    "fixed": (dict(), lambda i: 0.01),
    "step": (dict(gamma=0.1, stepsize=3), lambda i: 0.01 * 0.1 ** (i // 3)),
    "exp": (dict(gamma=0.9), lambda i: 0.01 * 0.9 ** i),
    "inv": (dict(gamma=1e-2, power=0.75), lambda i: 0.01 * (1 + 1e-2 * i) ** -0.75),
    "poly": (dict(power=2.0, max_iter=20), lambda i: 0.01 * (1 - i / 20) ** 2),
    "sigmoid": (dict(gamma=-0.5, stepsize=5), lambda i: 0.01 / (1 + math.exp(0.5 * (i - 5)))),
}


@pytest.mark.parametrize("policy", sorted(FORMULAS))
def test_policy_matches_formula(policy):
    fields, formula = FORMULAS[policy]
    p = solver_param(lr_policy=policy, **fields)
    if policy == "sigmoid":
        with pytest.raises(FcnkitError, match="gamma"):
            check_lr_policy(p)  # Caffe CHECKs gamma >= 0 even though negative would decay
        p.gamma = 0.5
        formula = lambda i: 0.01 / (1 + math.exp(-0.5 * (i - 5)))  # noqa: E731
    check_lr_policy(p)
    for it in range(20):
        rate, _ = learning_rate(p, it, 0)
        assert rate == pytest.approx(formula(it), rel=1e-6), it


def test_step_reports_current_step():
    p = solver_param(lr_policy="step", gamma=0.5, stepsize=4)
    assert [learning_rate(p, i, 0)[1] for i in (0, 3, 4, 9)] == [0, 0, 1, 2]


def test_multistep_advances_one_stepvalue_per_call_from_saved_step():
    p = solver_param(lr_policy="multistep", gamma=0.1, stepvalue=[2, 5])
    step, rates = 0, []
    for it in range(8):
        rate, step = learning_rate(p, it, step)
        rates.append(rate)
    expected = [0.01, 0.01, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4]
    assert rates == pytest.approx(expected, rel=1e-6)
    assert step == 2
    # Resuming at iteration 6 with a lost current_step climbs back one step per call, as Caffe.
    assert learning_rate(p, 6, 0) == pytest.approx((1e-3, 1))


@pytest.mark.parametrize("fields, option", [
    (dict(lr_policy="step", gamma=0.1), "stepsize"),
    (dict(lr_policy="poly", power=1.0), "max_iter"),
    (dict(lr_policy="exp", gamma=-1.0), "gamma"),
    (dict(lr_policy="plateau"), "plateau"),
    (dict(lr_policy="cosine"), "cosine"),
])
def test_bad_policy_options_are_named(fields, option):
    with pytest.raises(FcnkitError, match=option):
        check_lr_policy(solver_param(**fields))
