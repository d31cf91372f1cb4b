"""The Solver's iterations against numpy transcriptions of Caffe's update (tests/solver_helpers)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from netgen.errors import FcnkitError
from netgen.schema import to_prototxt
from solver_helpers import (batches, linear_grads, linear_net_text, net_param, np_train,
                            solver_param)
from solvers.engine.solver import Solver

BASE = 'base_lr: 0.05 lr_policy: "fixed" max_iter: 6 snapshot_after_train: false '


def make_solver(text: str, seed: int = 0, **net_options) -> Solver:
    sp = solver_param(BASE, text)
    sp.train_net_param.CopyFrom(net_param(linear_net_text(**net_options)))
    torch.manual_seed(seed)
    return Solver(sp, allow_python_modules=True)


def data_stream(seed=0, count=3, batch=4, dim=5, out=3):
    return itertools.cycle(batches(seed, count, batch, dim, out))


def run_and_compare(text: str, iters: int = 6, rtol: float = 1e-5, **net_options):
    solver = make_solver(text, **net_options)
    start = [p.data.astype(np.float64) for p in solver.net.learnable_params()]
    losses = []
    solver.step(iters, callback=lambda it, loss, smoothed, lr: losses.append(loss))
    p = solver.param
    lr_mults = [q.lr_mult for q in solver.net.learnable_params()]
    decay_mults = [q.decay_mult for q in solver.net.learnable_params()]
    expected, expected_losses, hist = np_train(p, start, lr_mults, decay_mults, data_stream(), iters)
    for param, want in zip(solver.net.learnable_params(), expected):
        np.testing.assert_allclose(param.data, want, rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    n = len(expected)
    for k, slot in enumerate(hist):
        for i, h in enumerate(slot):
            np.testing.assert_allclose(solver.history[k * n + i].numpy(), h, rtol=rtol, atol=1e-6)
    return solver, start


@pytest.mark.parametrize("text", [
    # momentum, weight decay, biases lr_mult 2 / decay_mult 0, iter_size 2, step policy
    'momentum: 0.9 weight_decay: 0.01 iter_size: 2 lr_policy: "step" gamma: 0.5 stepsize: 2',
    'momentum: 0.9 weight_decay: 0.02 regularization_type: "L1"',
    'momentum: 0.5 clip_gradients: 0.3 iter_size: 3',
    'momentum: 0.9 lr_policy: "multistep" gamma: 0.3 stepvalue: 1 stepvalue: 4',
], ids=["step-itersize2", "L1", "clip-itersize3", "multistep"])
def test_sgd_matches_numpy(text):
    run_and_compare(text)


def test_clipping_engages():
    """With a tiny threshold the clipped run differs from the unclipped one."""
    a = make_solver("momentum: 0.9 clip_gradients: 0.01")
    b = make_solver("momentum: 0.9")
    a.step(2), b.step(2)
    assert not np.allclose(a.net.learnable_params()[0].data, b.net.learnable_params()[0].data)


@pytest.mark.parametrize("type_, text", [
    ("Nesterov", "momentum: 0.9 weight_decay: 0.01"),
    ("AdaGrad", "delta: 1e-6 weight_decay: 0.01"),
    ("RMSProp", "rms_decay: 0.9 delta: 1e-6"),
    ("AdaDelta", "base_lr: 1.0 momentum: 0.95 delta: 1e-6"),
    ("Adam", "base_lr: 0.01 momentum: 0.9 momentum2: 0.999 delta: 1e-8 iter_size: 2"),
])
def test_adaptive_solvers_match_numpy(type_, text):
    run_and_compare(f'type: "{type_}" {text}', iters=5, rtol=2e-5)


def test_legacy_solver_type_enum():
    solver = make_solver("solver_type: ADAM momentum: 0.9")
    assert solver.type == "Adam" and len(solver.history) == 8
    with pytest.raises(FcnkitError, match="solver_type"):
        make_solver('solver_type: ADAM type: "Adam"')


def test_lr_mult_zero_is_not_updated():
    solver = make_solver("momentum: 0.9 weight_decay: 0.1", bias_lr=0, bias_decay=1)
    biases = [p.data.copy() for p in solver.net.learnable_params()[1::2]]
    weights = [p.data.copy() for p in solver.net.learnable_params()[0::2]]
    solver.step(3)
    for before, p in zip(biases, solver.net.learnable_params()[1::2]):
        np.testing.assert_array_equal(p.data, before)
    for before, p in zip(weights, solver.net.learnable_params()[0::2]):
        assert not np.allclose(p.data, before)


def test_smoothed_loss_is_caffes_running_mean():
    solver = make_solver("momentum: 0.9 average_loss: 3")
    seen = []
    solver.step(7, callback=lambda it, loss, smoothed, lr: seen.append((it, loss, smoothed, lr)))
    assert [s[0] for s in seen] == list(range(7)) and solver.iter == 7
    losses = [s[1] for s in seen]
    for k, (_, _, smoothed, lr) in enumerate(seen):
        window = losses[max(0, k - 2):k + 1]
        assert smoothed == pytest.approx(sum(window) / len(window), rel=1e-6)
        assert lr == pytest.approx(0.05)


def test_test_nets_share_weights_and_average_outputs(caplog):
    caplog.set_level("INFO", logger="solvers.engine.solver")
    sp = solver_param(BASE, "momentum: 0.9 test_iter: 2 test_interval: 2 test_compute_loss: true")
    sp.net_param.CopyFrom(net_param(linear_net_text()))
    torch.manual_seed(0)
    solver = Solver(sp, allow_python_modules=True)
    assert len(solver.test_nets) == 1 and solver.test_nets[0].phase == "TEST"
    weights = {0: [p.data.astype(np.float64) for p in solver.net.learnable_params()]}
    tests = []
    solver.step(5, callback=lambda it, *_: weights.__setitem__(
        it + 1, [p.data.astype(np.float64) for p in solver.net.learnable_params()]),
        on_test=lambda it, net_id, scores: tests.append((it, net_id, float(scores["loss"]))))
    assert [t[:2] for t in tests] == [(0, 0), (2, 0), (4, 0)]
    test_data = data_stream()
    for it, _, mean in tests:
        expected = np.mean([linear_grads(weights[it], *next(test_data))[0] for _ in range(2)])
        assert mean == pytest.approx(expected, rel=1e-5)
    logged = [float(r.getMessage().split()[-1]) for r in caplog.records
              if r.getMessage().startswith("Test loss:")]
    assert logged == pytest.approx([t[2] for t in tests], rel=1e-5)  # test_compute_loss


def test_solver_file_paths_are_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipe"
    (folder / "snapshots").mkdir(parents=True)
    (folder / "train.prototxt").write_text(linear_net_text())
    (folder / "solver.prototxt").write_text(
        BASE + 'train_net: "train.prototxt" snapshot: 2 snapshot_prefix: "snapshots/run"')
    monkeypatch.chdir(tmp_path)
    solver = Solver(folder / "solver.prototxt", allow_python_modules=True)
    solver.solve()
    assert sorted(p.name for p in (folder / "snapshots").iterdir()) == sorted(
        f"run_iter_{i}.{ext}" for i in (2, 4, 6) for ext in ("caffemodel", "solverstate"))
    # no prefix: the solver file's name without extension (Caffe's upgrade rule)
    (folder / "solver.prototxt").write_text(
        'base_lr: 0.05 lr_policy: "fixed" train_net: "train.prototxt" max_iter: 1')
    Solver(folder / "solver.prototxt", allow_python_modules=True).solve()
    assert (folder / "solver_iter_1.caffemodel").is_file()


@pytest.mark.parametrize("text, option", [
    ('snapshot_diff: true', "snapshot_diff"),
    ('debug_info: true', "debug_info"),
    ('type: "LBFGS"', "LBFGS"),
    ('lr_policy: "plateau"', "plateau"),
    ('weight_decay: 0.1 regularization_type: "L3"', "regularization_type"),
    ('average_loss: 0', "average_loss"),
    ('iter_size: 0', "iter_size"),
    ('test_iter: 3', "test_iter"),
    ('train_net: "x.prototxt"', "more than one train net"),
    ('snapshot: 1 snapshot_prefix: "/nonexistent/folder/x"', "snapshot_prefix"),
])
def test_bad_options_are_named(text, option):
    with pytest.raises(FcnkitError, match=option):
        make_solver(text)


def test_missing_train_net_file_is_named(tmp_path):
    (tmp_path / "solver.prototxt").write_text(BASE + 'net: "missing.prototxt"')
    with pytest.raises(FcnkitError, match="missing.prototxt"):
        Solver(tmp_path / "solver.prototxt")


def test_weights_argument_loads_into_train_net(tmp_path):
    a = make_solver("momentum: 0.9", seed=1)
    a.step(2)
    a.net.save(tmp_path / "w.caffemodel")
    c_param = solver_param(to_prototxt(a.param))
    torch.manual_seed(3)
    c = Solver(c_param, weights=str(tmp_path / "w.caffemodel"), allow_python_modules=True)
    for pa, pc in zip(a.net.learnable_params(), c.net.learnable_params()):
        np.testing.assert_array_equal(pa.data, pc.data)
    # the solver's own `weights` field, relative to the solver file
    c_param.weights.append("w.caffemodel")
    (tmp_path / "solver.prototxt").write_text(to_prototxt(c_param))
    torch.manual_seed(4)
    d = Solver(tmp_path / "solver.prototxt", allow_python_modules=True)
    for pa, pd in zip(a.net.learnable_params(), d.net.learnable_params()):
        np.testing.assert_array_equal(pa.data, pd.data)
