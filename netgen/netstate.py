"""Which layers a net keeps for a given NetState (phase, level, stages): Caffe's FilterNet."""
from __future__ import annotations

from typing import Sequence

from .errors import FcnkitError
from .geometry import where
from .proto import caffe_pb2

PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


def make_state(phase: str | int, level: int = 0, stages: Sequence[str] = ()) -> caffe_pb2.NetState:
    """A NetState from a phase name ("TRAIN"/"TEST", any case) or Phase value."""
    if isinstance(phase, str):
        if phase.upper() not in PHASES:
            raise FcnkitError(f"phase must be TRAIN or TEST, got {phase!r}")
        phase = PHASES[phase.upper()]
    if isinstance(stages, str):
        stages = [stages]
    return caffe_pb2.NetState(phase=int(phase), level=level, stage=list(stages))


def meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """A rule holds when every condition it sets holds (phase, level bounds, stages)."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    have = set(state.stage)
    return all(s in have for s in rule.stage) and not any(s in have for s in rule.not_stage)


def included(layer: caffe_pb2.LayerParameter, state: caffe_pb2.NetState) -> bool:
    """Include rules: kept if any holds. Exclude rules: dropped if any holds. Neither: kept."""
    if layer.include and layer.exclude:
        raise FcnkitError(f"{where(layer)}: give include OR exclude rules, not both")
    if layer.include:
        return any(meets_rule(state, r) for r in layer.include)
    return not any(meets_rule(state, r) for r in layer.exclude)


def filter_net(net: caffe_pb2.NetParameter, state: caffe_pb2.NetState) -> caffe_pb2.NetParameter:
    """A copy of `net` holding only the layers `state` keeps, with `state` recorded in it."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.ClearField("layer")
    out.state.CopyFrom(state)
    for layer in net.layer:
        if included(layer, state):
            kept = out.layer.add()
            kept.CopyFrom(layer)
            kept.phase = state.phase
    return out
