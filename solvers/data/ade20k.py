"""ADE20K in its MIT Scene Parsing release (ADEChallengeData2016).

ade_dir/images/{training,validation}/{name}.jpg with annotations/{same}/{name}.png holding
0 = other/unlabelled (-> 255 void) and 1..150 (-> 0..149). Split 'train'/'val' are accepted for
'training'/'validation'.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import params as P
from .base import SegDataset
from .readers import read_index_png, read_rgb, shift_void, to_caffe_input

SPLIT_FOLDERS = {"train": "training", "val": "validation"}


class ADE20KSegDataset(SegDataset):
    LAYER = "ADE20KSegDataLayer"
    PARAMS = {"ade_dir": P.Param(P.string, doc="ADEChallengeData2016 folder")}
    N_CLASSES = 150

    def _list_ids(self) -> list[str]:
        self.root = self.path("ade_dir")
        self.folder = SPLIT_FOLDERS.get(self.split, self.split)
        images = self.need_dir(self.root / "images" / self.folder)
        return sorted(p.stem for p in images.glob("*.jpg") if p.is_file())

    def files(self, i: int) -> dict[str, Path]:
        name = self.ids[i]
        return {"data": self.root / "images" / self.folder / f"{name}.jpg",
                "label": self.root / "annotations" / self.folder / f"{name}.png"}

    def read_data(self, path: Path) -> np.ndarray:
        return to_caffe_input(read_rgb(path), self.mean)

    def read_label(self, path: Path) -> np.ndarray:
        return shift_void(read_index_png(path), path, 150)
