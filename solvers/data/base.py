"""The shared shape of every segmentation dataset: split listing, per-top file reading, size
checks, augmentation, batching and the reference layers' visiting order.

A dataset names its tops (in the layer's top order) with a kind each (image or label),
says which file holds each top of item i (`files`), and how to read one (`read_<top>`).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from netgen.errors import FcnkitError
from netgen.presets import VOC_MEAN  # noqa: F401  (the VOC layers' default; re-exported)

from . import params as P
from .augment import IMAGE, LABEL, Augment
from .labels import LabelSurvey, check_range, label_map, remap
from .modality import Modality, color

COMMON_PARAMS: dict[str, P.Param] = {
    "split": P.Param(P.string, doc="split name (list file or folder, per dataset)"),
    "mean": P.Param(P.optional(P.mean), None, "BGR mean to subtract (dataset default)"),
    "randomize": P.Param(P.flag, True, "random order; forced off unless 'train' in split"),
    "seed": P.Param(P.seed, None, "seed of the order and augmentation (None: clock)"),
    "mirror": P.Param(P.flag, False, "random horizontal flips"),
    "scale": P.Param(P.scale, None, "random rescale factor range (low, high)"),
    "crop_size": P.Param(P.optional(P.size), None, "random crop (H, W), padding if smaller"),
    "batch_size": P.Param(P.batch_size, 1, "items per forward"),
    "label_map": P.Param(P.optional(label_map), None, "raw label value -> class, applied "
                         "before the range check, e.g. {255: 1} for masks saved as 0/255"),
}


class IndexOrder:
    """The reference layers' order: 0, 1, ... wrapping around, or with randomize each next
    index drawn by randint(0, n-1) from random seeded with `seed` (the same sequence the
    reference layers produce, which seed Python's global random the same way)."""

    def __init__(self, n: int, randomize: bool, seed: int | None) -> None:
        self.n = n
        self._rng = random.Random(seed) if randomize else None
        self._current = self._draw(-1)

    def _draw(self, previous: int) -> int:
        return self._rng.randint(0, self.n - 1) if self._rng else (previous + 1) % self.n

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        i = self._current
        self._current = self._draw(i)
        return i


def read_split(path: Path, layer: str) -> list[str]:
    """Non-empty stripped lines of a split list file."""
    if not path.is_file():
        raise FcnkitError(f"{layer}: split file {path} not found")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise FcnkitError(f"{layer}: split file {path} lists no items")
    return ids


class SegDataset:
    """Base class: subclasses set LAYER, PARAMS, MEAN, TOP_KINDS, `_list_ids`, `files`,
    and one `read_<top>(path)` per top."""

    LAYER = "SegDataLayer"
    PARAMS: dict[str, P.Param] = {}
    MEAN: tuple[float, ...] | None = VOC_MEAN
    TOP_KINDS: dict[str, str] = {"data": IMAGE, "label": LABEL}
    N_CLASSES: int = 0
    SURVEY_ITEMS = 200  # label maps read when a data layer is set up (survey_labels)

    def __init__(self, params: dict[str, Any] | None = None, *, layer: str | None = None,
                 base_dir: str | Path | None = None, **kwargs: Any) -> None:
        self.layer = layer or self.LAYER
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.params = P.validate({**(params or {}), **kwargs}, self.spec(), self.layer)
        self.split: str = self.params.get("split", "")
        self.mean = self.params.get("mean") or self.MEAN
        self.ids: list[str] = self._list_ids()
        if not self.ids:
            raise FcnkitError(f"{self.layer}: split '{self.split}' has no items")
        self.augment = Augment(self.params["mirror"], self.params["scale"],
                               self.params["crop_size"], self.params["seed"])

    @classmethod
    def spec(cls) -> dict[str, P.Param]:
        """All accepted param_str keys: the common ones, then this dataset's."""
        spec = {**COMMON_PARAMS, **cls.PARAMS}
        if cls.MEAN is None:
            del spec["mean"]
        return spec

    @classmethod
    def from_param_str(cls, text: str | None, *, layer: str | None = None,
                       base_dir: str | Path | None = None) -> "SegDataset":
        layer = layer or cls.LAYER
        return cls(P.parse_param_str(text, layer), layer=layer, base_dir=base_dir)

    # ---- helpers for subclasses ----
    def path(self, key: str) -> Path:
        """The directory given by param `key`, resolved against base_dir; must exist."""
        p = Path(self.params[key]).expanduser()
        if self.base_dir is not None and not p.is_absolute():
            p = self.base_dir / p
        if not p.is_dir():
            given = str(self.params[key])
            where = os.path.abspath(p)  # relative paths are read from the model folder
            shown = given if where == given else f"{given} (= {where})"
            raise FcnkitError(f"{self.layer}: {key} {shown} is not a directory")
        return p

    def need_dir(self, p: Path) -> Path:
        if not p.is_dir():
            raise FcnkitError(f"{self.layer}: folder {p} not found (split '{self.split}')")
        return p

    # ---- to implement ----
    def _list_ids(self) -> list[str]:
        raise NotImplementedError

    def files(self, i: int) -> dict[str, Path]:
        """top name -> the file it is read from, for item i."""
        raise NotImplementedError

    # ---- public interface ----
    @property
    def tops(self) -> tuple[str, ...]:
        return tuple(self.TOP_KINDS)

    @property
    def kinds(self) -> dict[str, str]:
        return {t: self.TOP_KINDS[t] for t in self.tops}

    @property
    def randomize(self) -> bool:
        """As in the reference layers, only a split named like 'train' is shuffled."""
        return bool(self.params.get("randomize")) and "train" in self.split

    @property
    def n_classes(self) -> int:
        """Classes of the (first) label top, void excluded."""
        return self.N_CLASSES

    @classmethod
    def input_modalities(cls, params: dict[str, Any]) -> dict[str, Modality]:
        """Image top -> how it is read and preprocessed (solvers.data.modality), given the
        validated param_str: what inference must repeat. Here colour minus `mean` (or the
        dataset's MEAN); NYUD adds HHA and depth."""
        mean = params.get("mean") or cls.MEAN
        return {top: color(mean) for top, kind in cls.TOP_KINDS.items() if kind == IMAGE}

    @property
    def batch_size(self) -> int:
        return self.params["batch_size"]

    def __len__(self) -> int:
        return len(self.ids)

    def order(self) -> IndexOrder:
        return IndexOrder(len(self), self.randomize, self.params["seed"])

    def load(self, i: int) -> dict[str, np.ndarray]:
        """Item i's tops as read from disk (no augmentation), sizes checked to agree."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.layer}: item {i} out of range 0..{len(self) - 1}")
        files = self.files(i)
        out: dict[str, np.ndarray] = {}
        first: tuple[str, Path] | None = None
        for top in self.tops:
            try:
                arr = self.read_top(top, files[top])
            except FcnkitError as e:
                raise FcnkitError(f"{self.layer}: item '{self.ids[i]}' of split "
                                  f"'{self.split}': {e}") from None
            if first is None:
                first = (top, files[top])
            elif arr.shape[-2:] != out[first[0]].shape[-2:]:
                h0, w0 = out[first[0]].shape[-2:]
                raise FcnkitError(
                    f"{self.layer}: {top} {files[top]} is {arr.shape[-1]}x{arr.shape[-2]} "
                    f"but {first[0]} {first[1]} is {w0}x{h0} (width x height)")
            out[top] = arr
        return out

    def read_top(self, top: str, path: Path) -> np.ndarray:
        """One top of an item, read from `path`; a label top is remapped by `label_map` and
        must hold classes 0..classes_of(top)-1 or void 255 (FcnkitError naming the file)."""
        arr = getattr(self, f"read_{top}")(path)
        if self.kinds[top] == LABEL and self.classes_of(top) > 0:
            arr = remap(arr, self.params.get("label_map"))
            check_range(arr, self.classes_of(top), path)
        return arr

    def classes_of(self, top: str) -> int:
        """Classes of label top `top`, void excluded (n_classes; SIFT Flow's geo has 3)."""
        return self.n_classes

    def survey_labels(self) -> LabelSurvey:
        """Label values present in the split, read and checked as training reads them: every
        label map of a split of up to SURVEY_ITEMS items, else that many evenly spaced. A bad
        label file fails here, when the layer is set up, not hours into a run."""
        tops = [t for t in self.tops if self.kinds[t] == LABEL]
        n = min(len(self), self.SURVEY_ITEMS) if tops else 0
        survey = LabelSurvey(f"{self.layer} (split '{self.split}')", n, n == len(self))
        for i in np.linspace(0, len(self) - 1, n).round().astype(int) if n else ():
            files = self.files(int(i))
            for top in tops:
                try:
                    values = np.unique(self.read_top(top, files[top]))
                except FcnkitError as e:
                    raise FcnkitError(f"{self.layer}: item '{self.ids[i]}' of split "
                                      f"'{self.split}': {e}") from None
                survey.present.setdefault(top, set()).update(int(v) for v in values)
        return survey

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Item i's tops (CxHxW each), with the configured augmentation drawn afresh."""
        return self.augment(self.load(i), self.kinds)

    def batch(self, indices: list[int]) -> dict[str, np.ndarray]:
        """Stack items into NxCxHxW arrays; their sizes must agree (use crop_size if not)."""
        items = [self[i] for i in indices]
        out = {}
        for top in self.tops:
            shapes = {a[top].shape for a in items}
            if len(shapes) > 1:
                raise FcnkitError(
                    f"{self.layer}: batch_size {len(items)} needs equal-size items but "
                    f"'{top}' has shapes {sorted(shapes)}; set crop_size in param_str")
            out[top] = np.stack([a[top] for a in items])
        return out
