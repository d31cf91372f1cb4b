"""From a solver.prototxt to checked options and the net definitions to build (Solver::Init).

Relative paths in the solver file (net, train_net, test_net, weights, snapshot_prefix) are
taken relative to the solver file's folder, so a recipe runs from any working directory.
Options the engine does not implement raise FcnkitError naming the option, never pass
silently. Which nets exist follows Caffe's InitTrainNet / InitTestNets, including the NetState
merge order (solver default phase, then the net's own `state`, then train_state/test_state).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2
from netgen.schema import read_net, read_solver

from .lr_policy import check_lr_policy
from .update_rules import LEGACY_SOLVER_TYPES, check_solver_type

REGULARIZATION_TYPES = ("L2", "L1")
PHASE_NAMES = {caffe_pb2.TRAIN: "TRAIN", caffe_pb2.TEST: "TEST"}
# Options accepted but without effect here, and why (the caller picks the device).
_UNSUPPORTED_WHEN_SET = {
    "snapshot_diff": "snapshots hold weights only (snapshot_diff is not supported)",
    "debug_info": "per-layer debug output is not supported (debug_info)",
}


@dataclasses.dataclass
class NetSpec:
    """One net to build: its definition, the NetState to build it in, and where it came from."""

    param: caffe_pb2.NetParameter
    phase: str
    level: int
    stages: tuple[str, ...]
    source: str


@dataclasses.dataclass
class SolverSetup:
    """Checked solver options plus everything resolved against the solver file's folder."""

    param: caffe_pb2.SolverParameter
    source: str                      # solver file path, or "solver" for an in-memory message
    type: str                        # "SGD", "Adam", ... (legacy solver_type upgraded)
    train: NetSpec | None
    tests: list[NetSpec]
    weights: list[str]               # SolverParameter.weights, resolved
    snapshot_prefix: str             # resolved (Caffe's UpgradeSnapshotPrefixProperty applied)


def load_solver(solver: caffe_pb2.SolverParameter | str | os.PathLike, *,
                train_net_param: caffe_pb2.NetParameter | None = None,
                root: bool = True) -> SolverSetup:
    """Read and check a solver; `train_net_param` replaces the train net the solver names.
    Test nets are resolved on the root process only, as in Caffe."""
    if isinstance(solver, (str, os.PathLike)):
        path = Path(solver)
        param = read_solver(path)
        base, source = path.parent, str(path)
    elif isinstance(solver, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(solver)
        path, base, source = None, Path("."), "solver"
    else:
        raise FcnkitError(f"Solver needs a SolverParameter or a solver.prototxt path, "
                          f"got {type(solver).__name__}")
    solver_type = _upgrade_type(param, source)
    _check_options(param, source, solver_type)
    train = _train_net(param, base, source, train_net_param)
    tests = _test_nets(param, base, source) if root else []
    weights = [str(_resolve(base, w.strip())) for entry in param.weights
               for w in entry.split(",") if w.strip()]
    return SolverSetup(param=param, source=source, type=solver_type, train=train, tests=tests,
                       weights=weights, snapshot_prefix=_snapshot_prefix(param, path, base))


def _resolve(base: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else base / p


def _upgrade_type(param: caffe_pb2.SolverParameter, source: str) -> str:
    """Caffe's UpgradeSolverType: the legacy enum becomes `type`; giving both is an error."""
    if not param.HasField("solver_type"):
        return param.type
    if param.HasField("type"):
        raise FcnkitError(f"{source}: give solver type as `type` or legacy `solver_type`, "
                          "not both")
    name = LEGACY_SOLVER_TYPES[param.solver_type]
    param.type = name
    param.ClearField("solver_type")
    return name


def _check_options(param: caffe_pb2.SolverParameter, source: str, solver_type: str) -> None:
    check_solver_type(solver_type, param, source)
    if not param.lr_policy:
        raise FcnkitError(f"{source}: lr_policy is not set")
    check_lr_policy(param, source)
    for option, why in _UNSUPPORTED_WHEN_SET.items():
        if getattr(param, option):
            raise FcnkitError(f"{source}: {option}: {why}")
    if param.average_loss < 1:
        raise FcnkitError(f"{source}: average_loss must be >= 1, got {param.average_loss}")
    if param.iter_size < 1:
        raise FcnkitError(f"{source}: iter_size must be >= 1, got {param.iter_size}")
    if param.weight_decay and param.regularization_type not in REGULARIZATION_TYPES:
        raise FcnkitError(f"{source}: unknown regularization_type {param.regularization_type!r} "
                          f"(L2 or L1)")
    for option in ("display", "snapshot", "test_interval", "max_iter"):
        if getattr(param, option) < 0:
            raise FcnkitError(f"{source}: {option} must be >= 0, got {getattr(param, option)}")


def _read_net(base: Path, name: str, field: str, source: str) -> caffe_pb2.NetParameter:
    path = _resolve(base, name)
    if not path.is_file():
        raise FcnkitError(f"{source}: {field} {name!r}: no such file ({path})")
    return read_net(path)


def _state(net: caffe_pb2.NetParameter, phase: int, extra: caffe_pb2.NetState | None):
    """Solver default phase, then the net's own state, then the solver's train/test_state."""
    state = caffe_pb2.NetState(phase=phase)
    state.MergeFrom(net.state)
    if extra is not None:
        state.MergeFrom(extra)
    return PHASE_NAMES[state.phase], state.level, tuple(state.stage)


def _train_net(param, base: Path, source: str,
               override: caffe_pb2.NetParameter | None) -> NetSpec:
    fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if param.HasField(f)]
    if override is not None:
        net, origin = override, "train_net_param given to Solver"
    else:
        if not fields:
            raise FcnkitError(f"{source}: no train net: set one of net, net_param, train_net, "
                              "train_net_param")
        if len(fields) > 1:
            raise FcnkitError(f"{source}: more than one train net given ({', '.join(fields)})")
        field = fields[0]
        if field in ("net", "train_net"):
            net = _read_net(base, getattr(param, field), field, source)
            origin = f"{field} {getattr(param, field)}"
        else:
            net, origin = getattr(param, field), field
    phase, level, stages = _state(net, caffe_pb2.TRAIN,
                                  param.train_state if param.HasField("train_state") else None)
    return NetSpec(param=net, phase=phase, level=level, stages=stages, source=origin)


def _test_nets(param, base: Path, source: str) -> list[NetSpec]:
    if param.HasField("net") and param.HasField("net_param"):
        raise FcnkitError(f"{source}: give net or net_param, not both")
    listed = [(p, "test_net_param") for p in param.test_net_param]
    listed += [(_read_net(base, name, "test_net", source), f"test_net {name}")
               for name in param.test_net]
    generic = param.HasField("net") or param.HasField("net_param")
    if len(param.test_iter) < len(listed) or (not generic and len(param.test_iter) != len(listed)):
        raise FcnkitError(f"{source}: test_iter must be given once per test net "
                          f"({len(listed)} test nets, {len(param.test_iter)} test_iter)")
    remaining = len(param.test_iter) - len(listed)
    if remaining and param.HasField("net_param"):
        listed += [(param.net_param, "net_param")] * remaining
    elif remaining:
        listed += [(_read_net(base, param.net, "net", source), f"net {param.net}")] * remaining
    if param.test_state and len(param.test_state) != len(listed):
        raise FcnkitError(f"{source}: test_state must be unset or given once per test net "
                          f"({len(listed)})")
    if listed and param.test_interval <= 0:
        raise FcnkitError(f"{source}: test_interval must be > 0 when there are test nets")
    specs = []
    for i, (net, origin) in enumerate(listed):
        extra = param.test_state[i] if param.test_state else None
        phase, level, stages = _state(net, caffe_pb2.TEST, extra)
        specs.append(NetSpec(param=net, phase=phase, level=level, stages=stages, source=origin))
    return specs


def _snapshot_prefix(param, path: Path | None, base: Path) -> str:
    """Caffe's UpgradeSnapshotPrefixProperty (unset: the solver file's name without its
    extension; a folder: that folder / the solver file's stem), then relative to `base`."""
    prefix = param.snapshot_prefix
    if path is not None and not prefix:
        return str(path.with_suffix(""))
    if not prefix:
        return ""
    resolved = _resolve(base, prefix)
    if path is not None and resolved.is_dir():
        resolved = resolved / path.stem
    return str(resolved)
