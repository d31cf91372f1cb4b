"""PASCAL VOC, SBD and PASCAL-Context datasets, laid out as their own downloads are.

VOC:     voc_dir/ImageSets/Segmentation/{split}.txt, JPEGImages/{id}.jpg,
         SegmentationClass/{id}.png (palette indices, 255 void).
SBD:     sbdd_dir/{split}.txt, img/{id}.jpg, cls/{id}.mat (GTcls.Segmentation).
Context: voc_dir/VOC2010/ImageSets/Main/{split}.txt, voc_dir/VOC2010/JPEGImages/{id}.jpg,
         context_dir/trainval/{id}.mat (LabelMap, ids of the full label list),
         context_dir/labels.txt ("id: name", full list), context_dir/59_labels.txt (the task's
         59 names in output order); labels outside the 59 become 0 (background).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from netgen.errors import FcnkitError

from . import classes
from . import params as P
from .base import SegDataset, read_split
from .readers import read_index_png, read_mat, read_rgb, to_caffe_input


class VOCSegDataset(SegDataset):
    LAYER = "VOCSegDataLayer"
    PARAMS = {"voc_dir": P.Param(P.string, doc="VOC year folder, e.g. VOC2011")}
    N_CLASSES = 21

    def _list_ids(self) -> list[str]:
        self.root = self.path("voc_dir")
        return read_split(self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt",
                          self.layer)

    def files(self, i: int) -> dict[str, Path]:
        name = self.ids[i]
        return {"data": self.root / "JPEGImages" / f"{name}.jpg",
                "label": self.root / "SegmentationClass" / f"{name}.png"}

    def read_data(self, path: Path) -> np.ndarray:
        return to_caffe_input(read_rgb(path), self.mean)

    def read_label(self, path: Path) -> np.ndarray:
        return read_index_png(path)[np.newaxis]


class SBDDSegDataset(VOCSegDataset):
    LAYER = "SBDDSegDataLayer"
    PARAMS = {"sbdd_dir": P.Param(P.string, doc="SBD 'dataset' folder")}

    def _list_ids(self) -> list[str]:
        self.root = self.path("sbdd_dir")
        return read_split(self.root / f"{self.split}.txt", self.layer)

    def files(self, i: int) -> dict[str, Path]:
        name = self.ids[i]
        return {"data": self.root / "img" / f"{name}.jpg",
                "label": self.root / "cls" / f"{name}.mat"}

    def read_label(self, path: Path) -> np.ndarray:
        seg = read_mat(path, "GTcls.Segmentation")
        if seg.min() < 0 or seg.max() > 255:
            raise FcnkitError(f"label {path} has values outside 0..255")
        return seg.astype(np.uint8)[np.newaxis]


def _read_label_list(path: Path, layer: str) -> list[tuple[int, str]]:
    """'id: name' lines -> [(id, name without spaces)], as the reference layer compares them."""
    if not path.is_file():
        raise FcnkitError(f"{layer}: label list {path} not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        num, sep, name = line.partition(":")
        if not sep or not num.strip().isdigit() or not name.strip():
            raise FcnkitError(f"{path}:{n}: expected 'id: name', got {line.strip()!r}")
        out.append((int(num), name.replace(" ", "").strip()))
    return out


class PASCALContextSegDataset(VOCSegDataset):
    LAYER = "PASCALContextSegDataLayer"
    PARAMS = {"voc_dir": P.Param(P.string, doc="folder holding VOC2010/"),
              "context_dir": P.Param(P.string, doc="PASCAL-Context annotations folder")}
    MEAN = (104.007, 116.669, 122.679)
    N_CLASSES = 60

    def _list_ids(self) -> list[str]:
        self.root = self.need_dir(self.path("voc_dir") / "VOC2010")
        self.context = self.path("context_dir")
        self.table = self._label_table()
        return read_split(self.root / "ImageSets" / "Main" / f"{self.split}.txt", self.layer)

    def _label_table(self) -> dict[int, int]:
        """Full-list label id -> task class (1..59); every other id is background 0."""
        full: dict[str, int] = {}
        for raw, name in _read_label_list(self.context / "labels.txt", self.layer):
            full.setdefault(name, raw)  # first occurrence wins, like list.index
        task = _read_label_list(self.context / "59_labels.txt", self.layer)
        names = [name for _, name in task if name != "background"]
        if len(names) != 59:
            raise FcnkitError(f"{self.layer}: {self.context / '59_labels.txt'} names "
                              f"{len(names)} classes, expected 59")
        table = {}
        for k, name in enumerate(names, 1):
            full_name = classes.PASCAL_CONTEXT_RENAMES.get(name, name)
            if full_name not in full:
                raise FcnkitError(f"{self.layer}: class '{full_name}' of 59_labels.txt is not "
                                  f"in {self.context / 'labels.txt'}")
            table[full[full_name]] = k
        return table

    def files(self, i: int) -> dict[str, Path]:
        name = self.ids[i]
        return {"data": self.root / "JPEGImages" / f"{name}.jpg",
                "label": self.context / "trainval" / f"{name}.mat"}

    def read_label(self, path: Path) -> np.ndarray:
        full = read_mat(path, "LabelMap").astype(np.int64)
        size = max(int(full.max(initial=0)), max(self.table)) + 1
        lut = np.zeros(size, dtype=np.uint8)
        for raw, k in self.table.items():
            lut[raw] = k
        return lut[np.clip(full, 0, None)][np.newaxis]
