"""Inference input preparation as the model's own data layer does it, input by input.

A deploy net's Input tops carry the names of its train/val data layer's tops (netgen writes
them so). The data layer in the model folder's val.prototxt (else train.prototxt) says, per
top, which modality it is and which mean it subtracts (solvers.data.modality): VOC-style
colour BGR minus the dataset mean, NYUD HHA unflipped minus the HHA mean, NYUD depth as log
depth. Multi-input nets (NYUD color+HHA, color+depth) take one image per input, paired by
file stem. Without such a data layer a one-input net falls back to colour minus the VOC mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from netgen.errors import FcnkitError
from netgen.legacy import upgrade_net
from netgen.presets import VOC_MEAN
from netgen.proto import caffe_pb2
from netgen.schema import read_net

from .data import params as P
from .data.layers import DATA_LAYERS
from .data.modality import Modality, color
from .data.readers import read_rgb

MODEL_NETS = ("val.prototxt", "train.prototxt")  # where the data layer is read, in this order


def input_tops(deploy: caffe_pb2.NetParameter) -> list[str]:
    """Every Input layer top of a deploy net, in order."""
    return [top for layer in upgrade_net(deploy).layer if layer.type == "Input"
            for top in layer.top]


def data_layer_modalities(folder: Path) -> tuple[Path, dict[str, Modality]] | None:
    """(net file, {prototxt top: Modality}) of the first fcnkit data layer in the folder's
    val.prototxt or train.prototxt; None when neither holds one. A param_str that does not
    validate is an FcnkitError naming the file."""
    for name in MODEL_NETS:
        path = folder / name
        if not path.is_file():
            continue
        for layer in upgrade_net(read_net(path)).layer:
            p = layer.python_param
            cls = DATA_LAYERS.get(f"{p.module}.{p.layer}") if layer.type == "Python" else None
            if cls is None:
                continue
            where = f"{path}: layer '{layer.name}'"
            dataset = cls.DATASET
            params = P.validate(P.parse_param_str(p.param_str, where), dataset.spec(), where)
            tops = params.get("tops") or tuple(dataset.TOP_KINDS)
            by_name = dataset.input_modalities(params)
            return path, {proto_top: by_name[top] for proto_top, top in zip(layer.top, tops)
                          if top in by_name}
    return None


@dataclass(frozen=True)
class InputPlan:
    """What each Input top of a deploy net takes: {top: Modality}, and where that was read."""

    inputs: dict[str, Modality]
    source: str

    def describe(self) -> str:
        return ", ".join(f"{top} ({m.name} minus mean {', '.join(f'{v:g}' for v in m.mean)})"
                         for top, m in self.inputs.items())

    def load(self, item: dict[str, Path]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(HxWx3 RGB to draw the overlay on, {top: C x H x W blob}) of one image per input;
        inputs of different sizes are an FcnkitError."""
        raw = {top: m.read(item[top]) for top, m in self.inputs.items()}
        sizes = {top: x.shape[:2] for top, x in raw.items()}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{item[t]} {s[1]}x{s[0]}" for t, s in sizes.items())
            raise FcnkitError(f"inputs differ in size (width x height): {shown}")
        feeds = {top: m.transform(raw[top]) for top, m in self.inputs.items()}
        first = next(iter(self.inputs))
        shown = raw[first] if raw[first].ndim == 3 else read_rgb(item[first])
        return shown, feeds


def input_plan(deploy: Path, mean: Sequence[float] | None = None) -> InputPlan:
    """How to preprocess each input of `deploy` (a deploy.prototxt in its model folder).

    mean: a B,G,R mean given by the user; replaces the colour mean (one-input nets only).
    Raises FcnkitError for a multi-input net whose folder has no data layer to say how.
    """
    tops = input_tops(read_net(deploy))
    found = data_layer_modalities(deploy.parent)
    if found is not None and all(top in found[1] for top in tops):
        source, known = found
        plan = {top: known[top] for top in tops}
        if mean is not None and len(tops) == 1 and plan[tops[0]].name == "color":
            return InputPlan({tops[0]: color(mean)}, "--mean")
        if mean is not None and len(tops) > 1:
            raise FcnkitError(f"--mean: {deploy} takes {len(tops)} inputs "
                              f"({', '.join(tops)}); each one's mean comes from {source}")
        return InputPlan(plan, str(source))
    if len(tops) == 1:
        return InputPlan({tops[0]: color(VOC_MEAN if mean is None else mean)},
                         "--mean" if mean is not None else "VOC mean (no data layer found)")
    raise FcnkitError(f"{deploy} takes inputs {', '.join(tops)}, and no data layer in "
                      f"{' or '.join(MODEL_NETS)} beside it says how to preprocess them")


def pair_inputs(plan: InputPlan, images: dict[str, list[Path]]) -> list[dict[str, Path]]:
    """One {top: image} per item: the first input's images, each paired by file stem with
    an image of every other input. A missing input or partner is an FcnkitError."""
    tops = list(plan.inputs)
    missing = [t for t in tops if t not in images]
    unknown = [t for t in images if t not in plan.inputs]
    if unknown or missing:
        usage = " ".join(f"--input {t}=DIR" for t in tops)
        what = (f"unknown input(s) {', '.join(unknown)}" if unknown
                else f"missing {', '.join(missing)}")
        raise FcnkitError(f"the net takes {len(tops)} input(s), {plan.describe()}: give one "
                          f"image per input ({usage}); {what}")
    by_stem = {t: {p.stem: p for p in images[t]} for t in tops}
    items = []
    for path in images[tops[0]]:
        item = {tops[0]: path}
        for t in tops[1:]:
            if path.stem not in by_stem[t]:
                raise FcnkitError(f"--input {t}: no image named {path.stem} to go with {path}")
            item[t] = by_stem[t][path.stem]
        items.append(item)
    return items
