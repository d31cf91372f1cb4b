"""How each kind of net input is read from disk and made into a Caffe blob: one definition
used by the data layers when training and by inference (solvers.preprocess), so a net sees at
test time exactly what it saw in training.

colour: RGB -> BGR, float32, minus the dataset's BGR mean, HWC -> CHW (3 x H x W).
HHA:    the three HHA channels in file order (not flipped: they are geocentric features, not
        colours), minus the HHA mean (NYUD reference layer), HWC -> CHW (3 x H x W).
depth:  log of the 16-bit depth PNG (zero, missing depth, clamped to 1 so log stays finite)
        minus the mean log depth (NYUD reference layer), 1 x H x W.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .readers import read_gray, read_rgb, to_caffe_input


def hha_input(hha: np.ndarray, mean_hha: Sequence[float]) -> np.ndarray:
    """HxWx3 HHA image -> float32 3xHxW minus mean, channels unflipped."""
    out = np.asarray(hha, dtype=np.float32) - np.asarray(mean_hha, np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def log_depth_input(depth: np.ndarray, mean_log_depth: float) -> np.ndarray:
    """HxW depth (16-bit PNG values) -> float32 1xHxW log depth minus its mean."""
    d = np.asarray(depth, dtype=np.float32)
    return (np.log(np.maximum(d, 1.0)) - np.float32(mean_log_depth))[np.newaxis]


@dataclass(frozen=True)
class Modality:
    """One kind of input: `read(path)` gives the image as stored (HxWx3 or HxW), `transform`
    the C x H x W float32 blob the net takes; `mean` is what is subtracted (shown to users)."""

    name: str
    mean: tuple[float, ...]
    read: Callable[[Path], np.ndarray]
    transform: Callable[[np.ndarray], np.ndarray]

    def __call__(self, path: Path) -> np.ndarray:
        return self.transform(self.read(path))


def color(mean_bgr: Sequence[float]) -> Modality:
    mean = tuple(float(v) for v in mean_bgr)
    return Modality("color", mean, read_rgb, lambda rgb: to_caffe_input(rgb, mean))


def hha(mean_hha: Sequence[float]) -> Modality:
    mean = tuple(float(v) for v in mean_hha)
    return Modality("hha", mean, lambda p: read_rgb(p, "hha"), lambda x: hha_input(x, mean))


def depth(mean_log_depth: float) -> Modality:
    return Modality("depth", (float(mean_log_depth),), lambda p: read_gray(p, "depth"),
                    lambda x: log_depth_input(x, mean_log_depth))
