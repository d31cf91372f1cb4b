"""Transplant classifier weights into a fully convolutional net (the FCN reference's surgery).

Parameters are copied by layer name (source name + suffix = target name). Where the shapes
differ but the element count agrees the values are reshaped in C order ("coerced"): that is
exactly convolutionalisation, since an InnerProduct over a CxHxW input multiplies the
C-order flattening that a CxHxW convolution kernel sees (fc6 4096x25088 -> 4096x512x7x7).
Source layers or extra blobs the target lacks are dropped; target parameters the source
lacks are filled with the target's fillers (seeded). Every parameter is reported.

Also a script: python surgery/transplant.py vgg16.caffemodel [--net deploy.prototxt] ...
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file from a fresh clone
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataclasses import dataclass  # noqa: E402
from typing import Iterator  # noqa: E402

import numpy as np  # noqa: E402

from netgen.errors import FcnkitError  # noqa: E402
from netgen.proto import caffe_pb2  # noqa: E402
from surgery.caffemodel import Weights, legacy_fits  # noqa: E402
from surgery.fillers import fill  # noqa: E402
from netgen.legacy import upgrade_net  # noqa: E402
from surgery.shapes import net_params  # noqa: E402

ACTIONS = ("copied", "coerced", "dropped", "init")


@dataclass(frozen=True)
class Entry:
    """What happened to one parameter blob."""
    action: str                  # one of ACTIONS
    layer: str                   # target layer (source layer for "dropped")
    index: int
    shape: tuple[int, ...]       # target shape (source shape for "dropped")
    source: str | None = None    # source layer it came from
    from_shape: tuple[int, ...] | None = None  # for "coerced"
    note: str = ""

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        where = f"{self.layer}[{self.index}]"
        if self.action == "coerced":
            what = f"{_fmt(self.from_shape)} -> {_fmt(self.shape)}"
        else:
            what = _fmt(self.shape)
        if self.source and self.source != self.layer:
            where = f"{self.source}[{self.index}] -> {where}"
        note = f"  ({self.note})" if self.note else ""
        return f"{self.action:8s} {where:28s} {what}{note}"


class Report:
    """Every parameter of a transplant (or stage init), in order, with totals per action."""

    def __init__(self, entries: list[Entry] | None = None):
        self.entries: list[Entry] = list(entries or [])

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def by_action(self, action: str) -> list[Entry]:
        return [e for e in self.entries if e.action == action]

    def find(self, layer: str, index: int = 0) -> Entry:
        for e in self.entries:
            if e.layer == layer and e.index == index:
                return e
        raise KeyError(f"{layer}[{index}]")

    def summary(self) -> str:
        parts = []
        for action in ACTIONS:
            found = self.by_action(action)
            if found:
                params = sum(e.count for e in found)
                parts.append(f"{action} {len(found)} blobs ({params:,} values)")
        return "; ".join(parts) or "nothing to do"

    def __str__(self) -> str:
        return "\n".join([*map(str, self.entries), self.summary()])


def _fmt(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def transplant(target_net: caffe_pb2.NetParameter, source: Weights, suffix: str = "",
               seed: int = 0, *, input_channels: int | dict[str, int] = 3,
               input_size: tuple[int, int] | None = None) -> tuple[Weights, Report]:
    """Weights for `target_net` taken from `source` by name, plus the report.

    input_channels / input_size: for data layers whose shape the prototxt does not state
    (Python, Data...), see surgery.shapes. An element-count mismatch is a FcnkitError.
    Copied arrays share memory with `source` (a 138M-parameter net is not duplicated).
    """
    net = upgrade_net(target_net)
    targets = net_params(net, input_channels=input_channels, input_size=input_size)
    types = {layer.name: layer.type for layer in net.layer}
    rng = np.random.default_rng(seed)
    report = Report()
    out = Weights(net=_strip(net))
    filled: dict[str, list[np.ndarray | None]] = {name: [None] * len(params)
                                                  for name, params in targets.items()}
    for src_name, arrays in source.items():
        name = src_name + suffix
        params = targets.get(name, [])
        for i, array in enumerate(arrays):
            shape = params[i].shape if i < len(params) else ()
            stored = array.shape
            if (src_name, i) in source.legacy:  # legacy 4-d dims: Caffe matches trailing axes
                stored = _strip_legacy(stored, shape)
            if i >= len(params):
                note = (f"target layer {name!r} has {len(params)} blobs" if params
                        else f"no layer {name!r} in the target")
                report.add(Entry("dropped", src_name, i, stored, note=note))
            elif stored == shape:
                filled[name][i] = np.asarray(array, dtype=np.float32).reshape(shape)
                report.add(Entry("copied", name, i, shape, source=src_name))
            elif array.size == int(np.prod(shape, dtype=np.int64)):
                filled[name][i] = np.asarray(array, dtype=np.float32).reshape(shape)
                report.add(Entry("coerced", name, i, shape, source=src_name,
                                 from_shape=stored))
            else:
                raise FcnkitError(f"layer {src_name!r} param {i}: source shape {_fmt(stored)} "
                                  f"({array.size:,} values) cannot fill target layer {name!r} "
                                  f"shape {_fmt(shape)} ({int(np.prod(shape)):,} values)")
    for name, params in targets.items():
        arrays = filled[name]
        for i, param in enumerate(params):
            if arrays[i] is None:
                arrays[i] = fill(param.filler, param.shape, rng)
                report.add(Entry("init", name, i, param.shape,
                                 note=f"{_filler_text(param.filler)} filler"))
        out[name] = arrays
        out.types[name] = types[name]
    report.entries.sort(key=_report_order(net, source))
    return out, report


def _strip_legacy(stored: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...]:
    """The real shape behind legacy num/channels/height/width dims (1x1x4096x25088 -> 4096x25088)."""
    if target and legacy_fits(stored, target):
        return tuple(target)
    while len(stored) > 1 and stored[0] == 1:
        stored = stored[1:]
    return stored


def _report_order(net: caffe_pb2.NetParameter, source: Weights):
    """Target layers in net order, then dropped source layers in file order."""
    rank = {layer.name: i for i, layer in enumerate(net.layer)}
    source_rank = {name: i for i, name in enumerate(source)}

    def key(entry: Entry):
        if entry.action == "dropped":
            return (1, source_rank.get(entry.layer, 0), entry.index)
        return (0, rank.get(entry.layer, 0), entry.index)
    return key


def _filler_text(filler: caffe_pb2.FillerParameter) -> str:
    if filler.type == "constant":
        return f"constant {filler.value:g}"
    if filler.type == "gaussian":
        return f"gaussian std {filler.std:g}"
    return filler.type


def _strip(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of `net` without blobs: the layer definitions to write with the weights."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for layer in out.layer:
        layer.ClearField("blobs")
    return out


if __name__ == "__main__":
    from surgery.cli import transplant_script

    transplant_script()
