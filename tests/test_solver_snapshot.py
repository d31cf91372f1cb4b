"""Snapshots: Caffe's file names and layouts, exact resume, atomicity, and divergence handling."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2
from solver_helpers import linear_net_text, net_param, solver_param
from solvers.engine import snapshot as snapshot_module
from solvers.engine.solver import Solver
from surgery.caffemodel import load_weights


def make_solver(folder, text="", seed=0, **net_options) -> Solver:
    sp = solver_param(f'base_lr: 0.05 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 '
                      f'stepvalue: 4 momentum: 0.9 weight_decay: 0.01 max_iter: 6 '
                      f'snapshot_prefix: "{folder}/snap"', text)
    sp.train_net_param.CopyFrom(net_param(linear_net_text(**net_options)))
    torch.manual_seed(seed)
    return Solver(sp, allow_python_modules=True)


def data_layer(solver: Solver):
    return solver.net.layers[0].impl.obj


def weights_of(solver: Solver) -> list[np.ndarray]:
    return [p.data.copy() for p in solver.net.learnable_params()]


@pytest.mark.parametrize("fmt, type_", [("BINARYPROTO", "SGD"), ("HDF5", "SGD"),
                                        ("BINARYPROTO", "Adam"), ("HDF5", "Adam")])
def test_resume_is_bit_identical(tmp_path, fmt, type_):
    text = f'snapshot: 3 snapshot_format: {fmt} type: "{type_}" iter_size: 2'
    full = make_solver(tmp_path, text)
    full.solve()
    h5 = ".h5" if fmt == "HDF5" else ""
    state = tmp_path / f"snap_iter_3.solverstate{h5}"
    assert state.is_file() and (tmp_path / f"snap_iter_6.caffemodel{h5}").is_file()

    (tmp_path / "again").mkdir()
    resumed = make_solver(tmp_path / "again", text, seed=123)  # different initial weights
    assert not np.array_equal(weights_of(resumed)[0], weights_of(full)[0])
    resumed.restore(state)
    assert (resumed.iter, resumed.current_step) == (3, 1)
    data_layer(resumed).counter = 3 * 2  # the data the uninterrupted run saw next
    resumed.solve()
    assert resumed.iter == 6
    for a, b in zip(weights_of(full), weights_of(resumed)):
        assert np.array_equal(a, b)
    for a, b in zip(full.history, resumed.history):
        assert torch.equal(a, b)


def test_restore_without_the_history_is_not_identical(tmp_path):
    """The resume test can fail: dropping the momentum history changes the weights."""
    full = make_solver(tmp_path, "snapshot: 3")
    full.solve()
    (tmp_path / "b").mkdir()
    resumed = make_solver(tmp_path / "b", "snapshot: 3")
    resumed.restore(tmp_path / "snap_iter_3.solverstate")
    for h in resumed.history:
        h.zero_()
    data_layer(resumed).counter = 3
    resumed.solve()
    assert not np.array_equal(weights_of(full)[0], weights_of(resumed)[0])


def test_binary_solverstate_layout(tmp_path):
    solver = make_solver(tmp_path, 'type: "Adam" max_iter: 5')
    solver.step(5)
    model, state_path = solver.snapshot()
    assert model == f"{tmp_path}/snap_iter_5.caffemodel"
    state = caffe_pb2.SolverState.FromString(open(state_path, "rb").read())
    assert (state.iter, state.learned_net, state.current_step) == (5, model, 2)
    params = solver.net.learnable_params()
    assert len(state.history) == 2 * len(params)  # Adam: m for every param, then v
    for i, blob in enumerate(state.history):
        p = params[i % len(params)]
        assert tuple(blob.shape.dim) == p.shape
        np.testing.assert_array_equal(np.array(blob.data, np.float32).reshape(p.shape),
                                      solver.history[i].numpy())
    # byte-identical to what protobuf itself writes for the same message
    assert open(state_path, "rb").read() == state.SerializeToString()
    weights = load_weights(model)
    np.testing.assert_array_equal(weights["ip2"][1], params[3].data)


def test_hdf5_solverstate_layout(tmp_path):
    solver = make_solver(tmp_path, "snapshot_format: HDF5")
    solver.step(3)
    model, state_path = solver.snapshot()
    assert model.endswith("snap_iter_3.caffemodel.h5") and state_path.endswith(".solverstate.h5")
    with h5py.File(state_path, "r") as f:
        assert f["iter"].dtype == np.int32 and f["iter"].shape == (1,) and f["iter"][0] == 3
        assert f["current_step"][0] == 1
        assert f["learned_net"][()].rstrip(b"\0").decode() == model
        assert sorted(f["history"]) == ["0", "1", "2", "3"]
        np.testing.assert_array_equal(f["history/2"][()], solver.history[2].numpy())
    with h5py.File(model, "r") as f:
        np.testing.assert_array_equal(f["data/ip1/0"][()], solver.net.params["ip1"][0].data)


def test_restore_finds_a_moved_snapshot_folder(tmp_path):
    (tmp_path / "a").mkdir()
    solver = make_solver(tmp_path / "a")
    solver.step(2)
    solver.snapshot()
    shutil.move(tmp_path / "a", tmp_path / "moved")
    (tmp_path / "b").mkdir()
    other = make_solver(tmp_path / "b", seed=5)
    other.restore(tmp_path / "moved" / "snap_iter_2.solverstate")
    for a, b in zip(weights_of(solver), weights_of(other)):
        assert np.array_equal(a, b)


def test_restore_rejects_a_foreign_history(tmp_path):
    sgd = make_solver(tmp_path)
    sgd.step(1)
    _, state = sgd.snapshot()
    (tmp_path / "b").mkdir()
    adam = make_solver(tmp_path / "b", 'type: "Adam"')
    with pytest.raises(FcnkitError, match="history"):
        adam.restore(state)


def test_snapshot_is_never_half_written(tmp_path, monkeypatch):
    solver = make_solver(tmp_path)
    solver.step(2)
    model, state = solver.snapshot()
    good = open(state, "rb").read()
    calls = []

    def failing_blob(f, array):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"\x1a\xff\xff")  # a partial record, then the disk "fills up"
            raise OSError(28, "No space left on device")
        return original(f, array)

    original = snapshot_module._write_blob
    monkeypatch.setattr(snapshot_module, "_write_blob", failing_blob)
    with pytest.raises(FcnkitError, match=r"snap_iter_2\.solverstate: cannot write: No space"):
        solver.snapshot()  # same iteration: would replace the good files
    assert open(state, "rb").read() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap_iter_2.caffemodel",
                                                          "snap_iter_2.solverstate"]


def test_nan_loss_stops_and_keeps_last_good_snapshot(tmp_path):
    solver = make_solver(tmp_path, "snapshot: 2 max_iter: 10", nan_at=5)
    seen = []
    with pytest.raises(FcnkitError, match=r"iteration 5: loss is nan.*snap_iter_4\.caffemodel"):
        solver.solve(callback=lambda it, *_: seen.append(weights_of(solver)))
    assert solver.iter == 5 and len(seen) == 5
    for a, b in zip(seen[-1], weights_of(solver)):  # stopped before touching the weights
        assert np.array_equal(a, b)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"snap_iter_{i}.{e}" for i in (2, 4) for e in ("caffemodel", "solverstate")]
    assert all(np.isfinite(a).all() for a in load_weights(tmp_path / "snap_iter_4.caffemodel").values()
               for a in a)


def test_snapshot_refuses_non_finite_weights(tmp_path):
    solver = make_solver(tmp_path)
    solver.step(1)
    solver.net.params["ip1"][0].data[0, 0] = np.inf
    with pytest.raises(FcnkitError, match="not finite"):
        solver.snapshot()
    assert list(tmp_path.iterdir()) == []


def test_stop_request_snapshots_then_stops(tmp_path):
    solver = make_solver(tmp_path, "max_iter: 100")
    solver.solve(callback=lambda it, *_: solver.request("stop") if it == 2 else None)
    assert solver.requested_early_exit and solver.iter == 3
    assert (tmp_path / "snap_iter_3.solverstate").is_file()


def test_snapshot_request_continues(tmp_path):
    solver = make_solver(tmp_path, "max_iter: 4 snapshot_after_train: false")
    solver.solve(callback=lambda it, *_: solver.request("snapshot") if it == 1 else None)
    assert solver.iter == 4 and not solver.requested_early_exit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap_iter_2.caffemodel",
                                                          "snap_iter_2.solverstate"]
