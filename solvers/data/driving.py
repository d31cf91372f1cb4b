"""Street-scene datasets: Cityscapes, KITTI road and SYNTHIA (RAND-CITYSCAPES).

Cityscapes: cityscapes_dir/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png with
  gtFine/{split}/{city}/{name}_gtFine_labelIds.png; label ids -> the 19 train ids of the
  official table (classes.CITYSCAPES_ID_TO_TRAIN), every other id -> 255.
KITTI road: kitti_dir (data_road, or a folder holding it)/training/image_2/{cat}_{n}.png with
  training/gt_image_2/{cat}_road_{n}.png. As the devkit reads it, the blue channel marks road
  (magenta 255,0,255 -> 1) and the red channel the evaluated area (red 255,0,0 -> 0); pixels
  with red 0 (black) are outside it -> 255.
SYNTHIA: synthia_dir/RGB/{name}.png with GT/LABELS/{name}.png, a 16-bit PNG whose first
  channel (R in file order) holds the class id. Mapped to Cityscapes' 19 train ids by default
  (classes: 19), so SYNTHIA-trained nets score on Cityscapes; classes: 16 gives the 16-class
  protocol (no terrain, truck, train).
KITTI and SYNTHIA have no official splits: split 'train' is every image (sorted by name), any
other split name reads {dir}/{split}.txt (one image name per line, no extension).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import classes
from . import params as P
from .base import SegDataset, read_split
from .readers import (VOID, lookup, read_color_png, read_index_png, read_rgb,
                      read_uint16_channels, to_caffe_input)


def _stems(folder: Path, pattern: str, suffix: str) -> list[str]:
    return sorted(p.name[: -len(suffix)] for p in folder.glob(pattern) if p.is_file())


class _RGBData:
    """data top: an RGB file, as Caffe input."""

    def read_data(self, path: Path) -> np.ndarray:
        return to_caffe_input(read_rgb(path), self.mean)  # type: ignore[attr-defined]


class CityscapesSegDataset(_RGBData, SegDataset):
    LAYER = "CityscapesSegDataLayer"
    PARAMS = {"cityscapes_dir": P.Param(P.string, doc="folder holding leftImg8bit/, gtFine/")}
    N_CLASSES = 19
    IMG_SUFFIX, GT_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"

    def _list_ids(self) -> list[str]:
        self.root = self.path("cityscapes_dir")
        folder = self.need_dir(self.root / "leftImg8bit" / self.split)
        return [p.relative_to(folder).as_posix()[: -len(self.IMG_SUFFIX)]
                for p in sorted(folder.glob(f"*/*{self.IMG_SUFFIX}")) if p.is_file()]

    def files(self, i: int) -> dict[str, Path]:
        rel = self.ids[i]
        return {"data": self.root / "leftImg8bit" / self.split / f"{rel}{self.IMG_SUFFIX}",
                "label": self.root / "gtFine" / self.split / f"{rel}{self.GT_SUFFIX}"}

    def read_label(self, path: Path) -> np.ndarray:
        return lookup(read_index_png(path), classes.CITYSCAPES_ID_TO_TRAIN)


def _all_or_listed(ds: SegDataset, folder: Path, listing_dir: Path) -> list[str]:
    """Split 'train': every PNG in `folder`; otherwise the names in {listing_dir}/{split}.txt."""
    if ds.split == "train":
        return _stems(ds.need_dir(folder), "*.png", ".png")
    return read_split(listing_dir / f"{ds.split}.txt", ds.layer)


class KITTIRoadSegDataset(_RGBData, SegDataset):
    LAYER = "KITTIRoadSegDataLayer"
    PARAMS = {"kitti_dir": P.Param(P.string, doc="data_road folder (or its parent)")}
    N_CLASSES = 2

    def _list_ids(self) -> list[str]:
        root = self.path("kitti_dir")
        self.root = root / "data_road" if (root / "data_road" / "training").is_dir() else root
        return _all_or_listed(self, self.root / "training" / "image_2", self.root)

    def files(self, i: int) -> dict[str, Path]:
        name = self.ids[i]
        category, _, number = name.rpartition("_")
        train = self.root / "training"
        return {"data": train / "image_2" / f"{name}.png",
                "label": train / "gt_image_2" / f"{category}_road_{number}.png"}

    def read_label(self, path: Path) -> np.ndarray:
        rgb = read_color_png(path)
        road, valid = rgb[:, :, 2] > 0, rgb[:, :, 0] > 0
        return np.where(valid, road.astype(np.uint8), np.uint8(VOID))[np.newaxis]


class SYNTHIASegDataset(_RGBData, SegDataset):
    LAYER = "SYNTHIASegDataLayer"
    PARAMS = {"synthia_dir": P.Param(P.string, doc="RAND_CITYSCAPES folder"),
              "classes": P.Param(P.one_of(19, 16), 19, doc="19 Cityscapes ids or 16-class")}
    TABLES = {19: classes.SYNTHIA_ID_TO_CITYSCAPES19, 16: classes.SYNTHIA_ID_TO_16}

    @property
    def n_classes(self) -> int:
        return self.params["classes"]

    def _list_ids(self) -> list[str]:
        self.root = self.path("synthia_dir")
        return _all_or_listed(self, self.root / "RGB", self.root)

    def files(self, i: int) -> dict[str, Path]:
        name = self.ids[i]
        return {"data": self.root / "RGB" / f"{name}.png",
                "label": self.root / "GT" / "LABELS" / f"{name}.png"}

    def read_label(self, path: Path) -> np.ndarray:
        ids = read_uint16_channels(path)[:, :, 0]
        return lookup(ids, self.TABLES[self.params["classes"]], size=1 << 16)
