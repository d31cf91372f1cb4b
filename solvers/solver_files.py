"""What a solver prototxt points to, read the way Caffe reads it (the engine's solver setup:
one-of rules for train/test nets, NetState merging, snapshot_prefix upgrade), and the facts
about those nets the training loop needs: loss tops, scored heads, upsampling layers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netgen.proto import caffe_pb2
from netgen.legacy import upgrade_net

from netgen.netstate import filter_net, make_state


@dataclass(frozen=True)
class Head:
    """One scored output: the score blob and the label blob its SoftmaxWithLoss compares."""

    score: str
    label: str


@dataclass(frozen=True)
class SolverFiles:
    """What a solver prototxt points to, resolved against its folder."""

    path: Path
    param: caffe_pb2.SolverParameter
    train_net: caffe_pb2.NetParameter  # layers of the TRAIN phase
    test_net: caffe_pb2.NetParameter | None  # layers of the TEST phase, None without a test net
    snapshot_prefix: Path

    @property
    def hdf5(self) -> bool:
        return self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5

    def weights_file(self, it: int) -> Path:
        """Caffe's snapshot name for the weights at iteration `it`."""
        return Path(f"{self.snapshot_prefix}_iter_{it}.caffemodel" + (".h5" if self.hdf5 else ""))

    def state_file(self, it: int) -> Path:
        return Path(f"{self.snapshot_prefix}_iter_{it}.solverstate" + (".h5" if self.hdf5 else ""))


def _filtered(spec: Any) -> caffe_pb2.NetParameter:
    """The layers a solver's net keeps in its NetState, in the current format."""
    return filter_net(upgrade_net(spec.param), make_state(spec.phase, spec.level, spec.stages))


def read_solver_files(solver_path: str | os.PathLike) -> SolverFiles:
    """Read a solver prototxt and the nets it names, resolved against its folder."""
    from .engine.solver_setup import load_solver

    path = Path(solver_path).resolve()
    setup = load_solver(path)
    test_net = _filtered(setup.tests[0]) if setup.tests else None
    return SolverFiles(path, setup.param, _filtered(setup.train), test_net,
                       Path(setup.snapshot_prefix))


def loss_tops(net: caffe_pb2.NetParameter) -> list[tuple[str, float]]:
    """(top, loss_weight) of every top that adds to the objective (Caffe's default weights)."""
    out = []
    for layer in net.layer:
        weights = list(layer.loss_weight) or [1.0 if layer.type.endswith("Loss") and i == 0
                                              else 0.0 for i in range(len(layer.top))]
        out += [(top, w) for top, w in zip(layer.top, weights) if w]
    return out


def heads(net: caffe_pb2.NetParameter) -> list[Head]:
    """The (score, label) pair of every SoftmaxWithLoss layer: what a segmentation test scores."""
    return [Head(layer.bottom[0], layer.bottom[1]) for layer in net.layer
            if layer.type == "SoftmaxWithLoss" and len(layer.bottom) >= 2]


def deconvolutions(net: caffe_pb2.NetParameter) -> list[str]:
    """Names of the Deconvolution (upsampling) layers."""
    return [layer.name for layer in net.layer if layer.type == "Deconvolution"]
