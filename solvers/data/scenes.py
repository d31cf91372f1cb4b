"""SIFT Flow and NYUDv2 datasets in the layout of the FCN reference data folders.

SIFT Flow: siftflow_dir/{split}.txt, Images/<S>/{id}.jpg, SemanticLabels/<S>/{id}.mat and
  GeoLabels/<S>/{id}.mat (variable S), <S> = spatial_envelope_256x256_static_8outdoorcategories.
  Tops data, sem (0 void, 1..33 -> 0..32, void 255), geo (-1 and 0 void, 1..3 -> 0..2).
NYUDv2: nyud_dir/{split}.txt, data/images/img_{id}.png, data/depth/img_{id}.png,
  data/hha/img_{id}.png, segmentation/img_{id}.mat (variable segmentation, 0 void, 1..40).
  Tops: any of color, depth, hha, label, in the order given by `tops`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import params as P
from .augment import IMAGE, LABEL
from .base import SegDataset, read_split
from .modality import Modality, color, depth, hha
from .readers import read_mat, read_rgb, shift_void, to_caffe_input

SIFTFLOW_SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"


class SIFTFlowSegDataset(SegDataset):
    LAYER = "SIFTFlowSegDataLayer"
    PARAMS = {"siftflow_dir": P.Param(P.string, doc="SIFT Flow folder")}
    MEAN = (114.578, 115.294, 108.353)
    TOP_KINDS = {"data": IMAGE, "sem": LABEL, "geo": LABEL}
    N_CLASSES = 33

    def _list_ids(self) -> list[str]:
        self.root = self.path("siftflow_dir")
        return read_split(self.root / f"{self.split}.txt", self.layer)

    def files(self, i: int) -> dict[str, Path]:
        name, r = self.ids[i], self.root
        return {"data": r / "Images" / SIFTFLOW_SUBDIR / f"{name}.jpg",
                "sem": r / "SemanticLabels" / SIFTFLOW_SUBDIR / f"{name}.mat",
                "geo": r / "GeoLabels" / SIFTFLOW_SUBDIR / f"{name}.mat"}

    def read_data(self, path: Path) -> np.ndarray:
        return to_caffe_input(read_rgb(path), self.mean)

    def classes_of(self, top: str) -> int:
        return 3 if top == "geo" else self.N_CLASSES

    def read_sem(self, path: Path) -> np.ndarray:
        return shift_void(read_mat(path, "S"), path, 33)

    def read_geo(self, path: Path) -> np.ndarray:
        return shift_void(read_mat(path, "S"), path, 3)


NYUD_TOPS = {"color": IMAGE, "depth": IMAGE, "hha": IMAGE, "label": LABEL}


class NYUDSegDataset(SegDataset):
    LAYER = "NYUDSegDataLayer"
    PARAMS = {"nyud_dir": P.Param(P.string, doc="NYUDv2 folder of the FCN release"),
              "tops": P.Param(P.subset_of(*NYUD_TOPS), doc="tops to output, in order")}
    MEAN = None  # fixed per-modality means below; no 'mean' key
    MEAN_BGR = (116.190, 97.203, 92.318)
    MEAN_HHA = (132.431, 94.076, 118.477)
    MEAN_LOGD = 7.844
    TOP_KINDS = NYUD_TOPS
    N_CLASSES = 40

    @property
    def tops(self) -> tuple[str, ...]:
        return self.params["tops"]

    def _list_ids(self) -> list[str]:
        self.root = self.path("nyud_dir")
        return read_split(self.root / f"{self.split}.txt", self.layer)

    def files(self, i: int) -> dict[str, Path]:
        name, r = f"img_{self.ids[i]}", self.root
        return {"color": r / "data" / "images" / f"{name}.png",
                "depth": r / "data" / "depth" / f"{name}.png",
                "hha": r / "data" / "hha" / f"{name}.png",
                "label": r / "segmentation" / f"{name}.mat"}

    @classmethod
    def input_modalities(cls, params: dict) -> dict[str, Modality]:
        """color: BGR minus MEAN_BGR; hha: unflipped minus MEAN_HHA; depth: log depth minus
        MEAN_LOGD (as the reference nyud_layers), for the tops `params` asks for."""
        every = {"color": color(cls.MEAN_BGR), "hha": hha(cls.MEAN_HHA),
                 "depth": depth(cls.MEAN_LOGD)}
        return {top: every[top] for top in params["tops"] if top in every}

    def read_color(self, path: Path) -> np.ndarray:
        return self.input_modalities(self.params)["color"](path)

    def read_depth(self, path: Path) -> np.ndarray:
        return self.input_modalities(self.params)["depth"](path)

    def read_hha(self, path: Path) -> np.ndarray:
        return self.input_modalities(self.params)["hha"](path)

    def read_label(self, path: Path) -> np.ndarray:
        return shift_void(read_mat(path, "segmentation"), path, 40)
