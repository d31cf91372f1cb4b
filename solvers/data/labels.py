"""Ground truth that cannot be right: out-of-range labels (an error, never folded into a class
or dropped), and data sets whose labels hold only 0 and void (binary masks saved as 0/255) or
never hold some class (a warning, at load and at scoring).

`label_map` (a data layer param_str key) remaps raw label values before the check, e.g.
{'label_map': {255: 1}} for 0/255 masks, or {38: 1, 75: 2, ...} for grey-converted colour maps.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from tqdm import tqdm

from netgen.errors import FcnkitError

from .readers import VOID

HINT = ("remap raw values with 'label_map' in the data layer's param_str, e.g. "
        "{'label_map': {255: 1}} for masks saved as 0/255")


@dataclass
class LabelSurvey:
    """Label values found per label top in `files` label maps of a data layer's split;
    `complete` when that was every label map of the split."""

    where: str
    files: int
    complete: bool
    present: dict[str, set[int]] = field(default_factory=dict)


def warn(message: str) -> None:
    """One warning line on stderr (between progress bars)."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def label_map(v: Any) -> dict[int, int]:
    """param_str checker: {raw value: class} with values in 0..255 (255 = void)."""
    if not isinstance(v, Mapping) or not v:
        raise ValueError("expected a non-empty dict {raw label: class}")
    out = {}
    for raw, cls in v.items():
        for x in (raw, cls):
            if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= VOID:
                raise ValueError(f"expected label values 0..{VOID}, got {x!r}")
        out[raw] = cls
    return out


def remap(label: np.ndarray, table: Mapping[int, int] | None) -> np.ndarray:
    """`label` with every value in `table` replaced by its class (others unchanged)."""
    if not table:
        return label
    lut = np.arange(VOID + 1, dtype=np.int64)
    for raw, cls in table.items():
        lut[raw] = cls
    inside = (label >= 0) & (label <= VOID)
    out = label.copy()
    out[inside] = lut[label[inside].astype(np.int64)].astype(label.dtype)
    return out


def out_of_range(label: np.ndarray, n_classes: int, ignore: int | None = VOID) -> np.ndarray:
    """Boolean mask of labels outside 0..n_classes-1 that are not the ignore label."""
    label = np.asarray(label)
    bad = (label < 0) | (label >= n_classes)
    return bad & (label != ignore) if ignore is not None else bad


def check_range(label: np.ndarray, n_classes: int, path: Path | str) -> None:
    """FcnkitError when `label` holds values outside 0..n_classes-1 other than void 255,
    naming the file, the values, and (for many distinct values) a colour-coded label image."""
    bad = out_of_range(label, n_classes)
    if not bad.any():
        return
    values = np.unique(label[bad])
    shown = ", ".join(str(int(v)) for v in values[:8]) + (" ..." if values.size > 8 else "")
    looks = ("; many distinct values look like a colour-coded label image, not class indices"
             if values.size > 3 else "")
    raise FcnkitError(f"label {path}: value(s) {shown} in {int(bad.sum())} pixels, outside "
                      f"0..{n_classes - 1} and not void {VOID}{looks}; {HINT}")


def dataset_warnings(present: Iterable[int], n_classes: int, where: str, source: str,
                     complete: bool, hint: str = HINT) -> list[str]:
    """Warnings about the classes present in `source` (e.g. "the 12 label maps read"; void
    excluded): only 0 (masks saved as 0/255?) and, when `complete` (all of the data set's
    labels were seen), classes that never occur. `hint` says how to remap labels."""
    seen = sorted(set(int(v) for v in present) - {VOID})
    if seen == [0] and n_classes > 1:
        return [f"{where}: {source} hold only class 0 and void {VOID}: every foreground pixel "
                f"is ignored and the net learns background only (binary masks saved as "
                f"0/255?); {hint}"]
    missing = [c for c in range(n_classes) if c not in seen] if complete else []
    if missing:
        return [f"{where}: class(es) {', '.join(map(str, missing))} of 0..{n_classes - 1} never "
                f"occur in {source}: their IU is undefined; check the class count and the "
                f"label values, or {hint}"]
    return []


def _layer_objects(net: Any) -> dict[str, Any]:
    """Layer name -> layer object: the engine's records hold a Python layer at rec.impl.obj;
    pycaffe's net.layers are the objects, named by net._layer_names."""
    names = list(getattr(net, "_layer_names", []))
    return {getattr(rec, "name", None) or names[k]: getattr(getattr(rec, "impl", None), "obj", rec)
            for k, rec in enumerate(net.layers)}


def check_net_labels(net: Any, definition: Any, where: str) -> list[str]:
    """Compare each SoftmaxWithLoss head with the label survey of the data layer feeding it
    (fcnkit data layers, set up). A label value outside the head's classes that is not its
    ignore_label is an FcnkitError; returns the dataset warnings (dataset_warnings) to show.

    net: engine or pycaffe net; definition: its NetParameter; where: the solver, for messages.
    """
    objects = _layer_objects(net)
    sources: dict[str, tuple[LabelSurvey, str]] = {}  # prototxt top -> (survey, dataset top)
    for layer in definition.layer:
        obj = objects.get(layer.name)
        survey = getattr(obj, "label_survey", None)
        if isinstance(survey, LabelSurvey):
            for proto_top, top in zip(layer.top, obj.dataset.tops):
                if top in survey.present:
                    sources[proto_top] = (survey, top)
    found: list[str] = []
    for layer in definition.layer:
        if (layer.type != "SoftmaxWithLoss" or len(layer.bottom) < 2
                or layer.bottom[1] not in sources):
            continue
        survey, top = sources[layer.bottom[1]]
        classes = int(net.blobs[layer.bottom[0]].shape[1])
        lp = layer.loss_param
        ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        bad = sorted(v for v in survey.present[top] if not 0 <= v < classes and v != ignore)
        if bad:
            raise FcnkitError(
                f"{where}: layer '{layer.name}' scores {classes} classes but the labels '{top}' of "
                f"{survey.where} hold {', '.join(map(str, bad[:8]))}"
                + ("" if ignore is None else f" (ignore_label {ignore})")
                + f"; fix the class count (netgen --classes) or {HINT}")
        found += dataset_warnings(survey.present[top] - {ignore}, classes,
                                  f"{survey.where} '{top}'",
                                  f"the {survey.files} label maps read", survey.complete)
    return found


def score_warnings(hist: np.ndarray, where: str, out_of_range: int = 0,
                   hint: str = HINT) -> list[str]:
    """Warnings about scored ground truth (confusion histogram rows = true classes): labels
    outside the classes that were left out, only class 0 present, classes never present."""
    hist = np.asarray(hist)
    out = []
    if out_of_range:
        out.append(f"{where}: {out_of_range} ground truth pixels hold labels outside "
                   f"0..{len(hist) - 1} and not void {VOID}; they were not scored; {hint}")
    present = np.flatnonzero(hist.sum(1))
    if present.size:
        out += dataset_warnings(present.tolist(), len(hist), where,
                                "the scored ground truth labels", True, hint)
    return out
