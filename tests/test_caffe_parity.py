"""fcnkit's engine against real Caffe (pycaffe) on the same prototxt and weights.

Width-scaled reference nets (FCN-8s, FCN-8s at-once, FCN-AlexNet; dropout left out, as its
masks are random) at two odd input sizes: every blob of the forward pass within 1e-4 relative,
every learnable parameter's gradient within 1e-3, and the weights after 3 SGD iterations
(momentum, weight decay, the reference lr_mult 2 / decay_mult 0 biases, iter_size 2) within
1e-4. Snapshots cross both ways: a solverstate and caffemodel written by one (binary and HDF5,
SGD and Adam) is restored by the other bit for bit and training goes on alike.
Relative error of an array: max |ours - caffe| / max |caffe|.

These run where `import caffe` works and are skipped, with the reason, elsewhere (CI has no
Caffe); see README "With real Caffe".
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from netgen.fcn import REFERENCE, fcn_alexnet, fcn_vgg16
from netgen.schema import to_prototxt
from solvers import caffe_backend
from solvers.engine import Net
from solvers.engine.solver import Solver

from engine_helpers import randomize, rel_error

caffe = caffe_backend.pycaffe()
pytestmark = pytest.mark.skipif(caffe is None, reason="needs real pycaffe: "
                                f"{caffe_backend.unavailable_reason()}")

NO_DROPOUT = dataclasses.replace(REFERENCE, dropout=False)
WIDTH = 1 / 16
NETS = {
    "fcn8s": lambda size: fcn_vgg16("train", "8s", 21, width=WIDTH, input_size=size,
                                    recipe=NO_DROPOUT),
    "fcn8s-atonce": lambda size: fcn_vgg16("train", "8s-atonce", 21, width=WIDTH,
                                           input_size=size, recipe=NO_DROPOUT),
    "fcn-alexnet": lambda size: fcn_alexnet("train", "32s", 21, width=WIDTH, input_size=size,
                                            recipe=NO_DROPOUT),
}
SGD_LR = {"fcn8s": 2e-7, "fcn8s-atonce": 2e-7, "fcn-alexnet": 1e-2}
SIZES = [(67, 83), (101, 45)]
FORWARD_RTOL, GRADIENT_RTOL, WEIGHT_RTOL = 1e-4, 1e-3, 1e-4


def _inputs(size: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Mean-subtracted-pixel-like data and labels with some void (255) pixels."""
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 50, (1, 3, *size)).astype(np.float32)
    label = rng.integers(0, 21, (1, 1, *size)).astype(np.float32)
    label[rng.random(label.shape) < 0.1] = 255
    return {"data": data, "label": label}


def _setup(tmp_path: Path, name: str, size: tuple[int, int], seed: int = 0):
    """The net's prototxt and random weights (caffemodel) in tmp_path; the engine Net."""
    net_param = NETS[name](size)
    proto = tmp_path / "train.prototxt"
    proto.write_text(to_prototxt(net_param))
    torch.manual_seed(seed)
    ours = Net(net_param, "TRAIN")
    randomize(ours, seed)
    weights = tmp_path / "init.caffemodel"
    ours.save(weights)
    return net_param, proto, weights, ours


def _learning(net_param, keys) -> set[tuple[str, int]]:
    """Those of `keys` ((layer, blob index) of the net's parameters) with lr_mult > 0 (Caffe
    computes no gradient for the others)."""
    layers = {layer.name: layer for layer in net_param.layer}
    return {(name, i) for name, i in keys
            if (layers[name].param[i].lr_mult if i < len(layers[name].param) else 1) > 0}


def _caffe_net(proto: Path, weights: Path):
    caffe.set_mode_cpu()
    return caffe.Net(str(proto), str(weights), caffe.TRAIN)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(NETS))
def test_forward_and_gradients_match_caffe(tmp_path, name, size):
    net_param, proto, weights, ours = _setup(tmp_path, name, size)
    x = _inputs(size, 1)
    theirs = _caffe_net(proto, weights)
    for key, value in x.items():
        theirs.blobs[key].data[...] = value
    theirs.forward()
    theirs.backward()
    ours.forward(**x)
    ours.backward()

    # every Caffe blob but the copies its inserted Split layers make has an engine twin
    compared = [b for b in theirs.blobs if not re.search(r"_split_\d+$", b)]
    assert compared and set(compared) <= set(ours.blobs)
    forward = {b: rel_error(ours.blobs[b].data, theirs.blobs[b].data) for b in compared}
    assert ours.blobs["loss"].data.item() > 0
    worst = max(forward, key=forward.get)
    assert forward[worst] <= FORWARD_RTOL, (worst, forward[worst])

    learning = _learning(net_param, _weights(theirs))
    gradients = {(layer, i): rel_error(ours.params[layer][i].diff, theirs.params[layer][i].diff)
                 for layer, i in learning}
    assert len(gradients) >= 10
    assert all(np.abs(theirs.params[k[0]][k[1]].diff).max() > 0 for k in gradients)
    worst_g = max(gradients, key=gradients.get)
    assert gradients[worst_g] <= GRADIENT_RTOL, (worst_g, gradients[worst_g])
    print(f"\n{name} {size}: forward worst {forward[worst]:.2e} ({worst}), gradient worst "
          f"{gradients[worst_g]:.2e} {worst_g}")


def _solver_file(tmp_path: Path, proto: Path, type_: str = "SGD", fmt: str = "BINARYPROTO",
                 prefix: str = "snap", sgd_lr: float = 2e-7) -> Path:
    """SGD at `sgd_lr` (the VGG nets sum their loss over pixels, AlexNet's is a mean: the rate
    that moves the weights by ~0.2% in 3 iterations differs by the pixel count) or Adam."""
    rates = {"SGD": f'base_lr: {sgd_lr:g} momentum: 0.9', "Adam": 'base_lr: 1e-3 momentum: 0.9 '
             'momentum2: 0.999 delta: 1e-8'}[type_]
    path = tmp_path / f"solver_{type_}_{fmt}_{prefix}.prototxt"
    path.write_text(f'net: "{proto}"\ntype: "{type_}"\n{rates}\nlr_policy: "fixed"\n'
                    f'weight_decay: 5e-4\niter_size: 2\nmax_iter: 100\ndisplay: 0\n'
                    f'snapshot_format: {fmt}\nsnapshot_prefix: "{tmp_path / prefix}"\n')
    return path


def _caffe_solver(path: Path, weights: Path, x: dict[str, np.ndarray]):
    caffe.set_mode_cpu()
    solver = caffe.get_solver(str(path))
    solver.net.copy_from(str(weights))
    for key, value in x.items():
        solver.net.blobs[key].data[...] = value
    return solver


def _engine_solver(path: Path, weights: Path, x: dict[str, np.ndarray]) -> Solver:
    solver = Solver(str(path), weights=str(weights))
    for key, value in x.items():
        solver.net.blobs[key].data = value
    return solver


def _weights(net) -> dict[tuple[str, int], np.ndarray]:
    return {(layer, i): np.array(blob.data) for layer, blobs in net.params.items()
            for i, blob in enumerate(blobs)}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(NETS))
def test_three_sgd_iterations_match_caffe(tmp_path, name, size):
    net_param, proto, weights, _ = _setup(tmp_path, name, size)
    x = _inputs(size, 2)
    path = _solver_file(tmp_path, proto, sgd_lr=SGD_LR[name])
    theirs, ours = _caffe_solver(path, weights, x), _engine_solver(path, weights, x)
    start = _weights(theirs.net)
    theirs.step(3)
    ours.step(3)
    assert theirs.iter == ours.iter == 3
    a, b = _weights(ours.net), _weights(theirs.net)
    errors = {k: rel_error(a[k], b[k]) for k in b}
    moved = {k: rel_error(b[k], start[k]) for k in _learning(net_param, b)}
    assert max(moved.values()) > 1e-3  # the steps changed the weights measurably
    worst = max(errors, key=errors.get)
    assert errors[worst] <= WEIGHT_RTOL, (worst, errors[worst])
    print(f"\n{name} {size}: weights after 3 SGD iterations worst {errors[worst]:.2e} {worst} "
          f"(largest change {max(moved.values()):.2e})")


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("type_", ["SGD", "Adam"])
@pytest.mark.parametrize("writer", ["caffe", "engine"])
def test_snapshots_cross_over(tmp_path, writer, type_, fmt):
    """One backend trains 2 iterations and snapshots; the other restores the files (weights
    bit-identical, iteration 2) and both train one more iteration alike, which needs the
    solver history (momentum, Adam's moments) carried over as well."""
    size = (45, 37)
    net_param, proto, weights, _ = _setup(tmp_path, "fcn8s", size, seed=3)
    x = _inputs(size, 4)
    h5 = ".h5" if fmt == "HDF5" else ""
    make = {"caffe": _caffe_solver, "engine": _engine_solver}
    reader = "engine" if writer == "caffe" else "caffe"
    first = make[writer](_solver_file(tmp_path, proto, type_, fmt, writer), weights, x)
    first.step(2)
    first.snapshot()
    model = tmp_path / f"{writer}_iter_2.caffemodel{h5}"
    state = tmp_path / f"{writer}_iter_2.solverstate{h5}"
    assert model.is_file() and state.is_file()

    second = make[reader](_solver_file(tmp_path, proto, type_, fmt, reader), weights, x)
    second.restore(str(state))
    assert second.iter == 2
    saved = _weights(first.net)
    restored = _weights(second.net)
    assert all(np.array_equal(restored[k], saved[k]) for k in saved)

    first.step(1)
    second.step(1)
    a, b = _weights(first.net), _weights(second.net)
    errors = {k: rel_error(b[k], a[k]) for k in a}
    steps = {k: rel_error(a[k], saved[k]) for k in _learning(net_param, a)}
    worst = max(errors, key=errors.get)
    assert max(steps.values()) > 1e-3
    assert errors[worst] <= WEIGHT_RTOL, (worst, errors[worst])
    second.snapshot()  # and the reader's own snapshot reads back in the writer's backend
    again = make[writer](_solver_file(tmp_path, proto, type_, fmt, writer), weights, x)
    again.restore(str(tmp_path / f"{reader}_iter_3.solverstate{h5}"))
    assert again.iter == 3
    assert all(np.array_equal(v, b[k]) for k, v in _weights(again.net).items())
    print(f"\n{writer} -> {reader} {type_} {fmt}: weights one iteration after the restore "
          f"worst {errors[worst]:.2e}")
