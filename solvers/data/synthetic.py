"""A synthetic segmentation dataset in PASCAL VOC layout, for tests and quick experiments.

Each image shows 1-4 shapes on a textured low-saturation background. Object class k (1..n)
has its own shape (circle, rectangle, triangle, stripe, ring, ellipse, diamond, cross) and
texture (flat, bars, checker, dots, waves); classes pair up on a shared hue, so a pixel's
colour alone is ambiguous and the net must look at texture and shape. Grey and grainy
coloured distractor blobs (background), illumination changes, noise and occlusion (later
shapes cover earlier ones) keep it from being trivial. As in VOC, a
one-pixel void (255) band runs along object edges. Everything is a function of
(seed, split, index), so the same arguments give the same files.

    python -m solvers.data.synthetic OUT --train 200 --val 50 [--size 64 64] [--classes 5]
"""
from __future__ import annotations

import argparse
import colorsys
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from netgen.errors import FcnkitError, cli_entry
from netgen.fileio import write_bytes_atomic, write_text_atomic
from solvers.palette import write_label_png

from . import classes
from . import params as P
from .base import SegDataset
from .readers import VOID, to_caffe_input

SPLIT_CODES = {"train": 0, "val": 1}
MAX_CLASSES = len(classes.SYNTHETIC) - 1

Grid = tuple[np.ndarray, np.ndarray]  # (u, v): coordinates in the shape's rotated frame


def _circle(u, v, r):
    return u * u + v * v <= r * r


def _rectangle(u, v, r):
    return (np.abs(u) <= r) & (np.abs(v) <= 0.65 * r)


def _triangle(u, v, r):
    pts = [(r * np.cos(a), r * np.sin(a)) for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6)]
    inside = np.ones(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
    return inside


def _stripe(u, v, r):
    return (np.abs(u) <= 1.6 * r) & (np.abs(v) <= 0.22 * r)


def _ring(u, v, r):
    d2 = u * u + v * v
    return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)


def _ellipse(u, v, r):
    return (u / r) ** 2 + (v / (0.5 * r)) ** 2 <= 1


def _diamond(u, v, r):
    return np.abs(u) + np.abs(v) <= r


def _cross(u, v, r):
    au, av = np.abs(u), np.abs(v)
    return ((au <= r) & (av <= 0.3 * r)) | ((av <= r) & (au <= 0.3 * r))


def _flat(u, v, rng):
    return np.zeros_like(u)


def _bars(u, v, rng):
    return np.sign(np.sin(v * 2 * np.pi / 5.0))


def _checker(u, v, rng):
    return np.sign(np.sin(u * np.pi / 3.0) * np.sin(v * np.pi / 3.0))


def _dots(u, v, rng):
    return np.cos(u * 2 * np.pi / 4.0) * np.cos(v * 2 * np.pi / 4.0)


def _grain(u, v, rng):
    return rng.uniform(-1, 1, size=u.shape)


def _waves(u, v, rng):
    return np.sin((u + v) * 2 * np.pi / 7.0)


@dataclass(frozen=True)
class Look:
    shape: Callable[[np.ndarray, np.ndarray, float], np.ndarray]
    texture: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


# Class k (1-based) looks like LOOKS[k-1]; names in classes.SYNTHETIC follow the shapes.
# Classes k and k + ceil(n/2) share a hue and differ in texture (see _hue), so colour alone
# does not tell them apart; grainy coloured blotches (background) imitate class colours.
LOOKS = (Look(_circle, _flat), Look(_rectangle, _bars), Look(_triangle, _checker),
         Look(_stripe, _dots), Look(_ring, _waves), Look(_ellipse, _flat),
         Look(_diamond, _dots), Look(_cross, _checker))


def _hue(k: int, n_classes: int) -> float:
    """Base hue of class k: ceil(n/2) hues evenly spaced, each shared by two classes."""
    n_hues = (n_classes + 1) // 2
    return ((k - 1) % n_hues) / n_hues


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def _smooth_noise(rng: np.random.Generator, hw: tuple[int, int], cells: int) -> np.ndarray:
    coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)


def _rotated(yy, xx, cy, cx, angle) -> Grid:
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    return c * dx + s * dy, -s * dx + c * dy


def _edges(label: np.ndarray) -> np.ndarray:
    """Pixels of a non-background region that touch a different label (4-neighbourhood)."""
    diff = np.zeros(label.shape, dtype=bool)
    diff[1:] |= label[1:] != label[:-1]
    diff[:-1] |= label[:-1] != label[1:]
    diff[:, 1:] |= label[:, 1:] != label[:, :-1]
    diff[:, :-1] |= label[:, :-1] != label[:, 1:]
    return diff & (label != 0)


def render(rng: np.random.Generator, size: tuple[int, int], n_classes: int,
           void_border: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One (HxWx3 uint8 RGB image, HxW uint8 label) pair; labels 0 (background), 1..n, 255."""
    if not 1 <= n_classes <= MAX_CLASSES:
        raise FcnkitError(f"synthetic data: n_classes must be 1..{MAX_CLASSES}, got {n_classes}")
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    m = float(min(h, w))

    # background: desaturated tint, gradient and blotches
    base = _hsv(rng.uniform(), rng.uniform(0.0, 0.2), rng.uniform(0.3, 0.8))
    grad = rng.uniform(-30, 30) * xx / w + rng.uniform(-30, 30) * yy / h
    img = base + (grad + 25 * _smooth_noise(rng, size, 4))[:, :, None]
    label = np.zeros(size, dtype=np.uint8)

    for _ in range(int(rng.integers(0, 3))):  # grey distractors, labelled background
        u, v = _rotated(yy, xx, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, np.pi))
        r = rng.uniform(0.08, 0.2) * m
        img[(u / r) ** 2 + (v / (rng.uniform(0.4, 1.0) * r)) ** 2 <= 1] = \
            _hsv(rng.uniform(), rng.uniform(0.0, 0.15), rng.uniform(0.2, 0.9))
    for _ in range(int(rng.integers(0, 3))):  # grainy coloured blotches, also background
        u, v = _rotated(yy, xx, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, np.pi))
        r = rng.uniform(0.1, 0.25) * m
        blob = (u / r) ** 2 + (v / (0.7 * r)) ** 2 + 0.6 * _smooth_noise(rng, size, 5) <= 1
        colour = _hsv(rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
        grain = 1 + 0.35 * _grain(u, v, rng)
        img[blob] = colour * grain[blob][:, None]

    for _ in range(int(rng.integers(1, 5))):
        k = int(rng.integers(1, n_classes + 1))
        look = LOOKS[k - 1]
        r = rng.uniform(0.12, 0.3) * m
        u, v = _rotated(yy, xx, rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w),
                        rng.uniform(0, 2 * np.pi))
        mask = look.shape(u, v, r)
        hue = _hue(k, n_classes) + rng.normal(0, 0.02)
        colour = _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
        shade = 1 + 0.3 * look.texture(u, v, rng)
        img[mask] = colour * shade[mask][:, None]
        label[mask] = k

    img = img * rng.uniform(0.8, 1.2) + rng.normal(0, 10, size=img.shape)
    if void_border:
        label[_edges(label)] = VOID
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), label


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one item, independent of how many others are made."""
    code = SPLIT_CODES.get(split)
    if code is None:
        code = int.from_bytes(split.encode(), "little") % (1 << 31) + len(SPLIT_CODES)
    return np.random.default_rng([seed, code, index])


def item_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def make_synthetic_voc(root: str | Path, n_train: int, n_val: int,
                       size: tuple[int, int] = (64, 64), n_classes: int = 5, seed: int = 0,
                       void_border: bool = True) -> Path:
    """Write a VOC-layout dataset (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/
    train.txt and val.txt) under `root`; `n_classes` object classes plus background 0.

    Returns `root`. Existing files of the same names are replaced.
    """
    root = Path(root)
    if n_train < 0 or n_val < 0 or n_train + n_val == 0:
        raise FcnkitError(f"synthetic data: need item counts >= 0 and some items, got "
                          f"train={n_train} val={n_val}")
    if len(size) != 2 or min(size) < 8:
        raise FcnkitError(f"synthetic data: size must be (H, W) with both >= 8, got {size}")
    if not 1 <= n_classes <= MAX_CLASSES:
        raise FcnkitError(f"synthetic data: n_classes must be 1..{MAX_CLASSES}, got {n_classes}")
    dirs = {d: root / d for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")}
    try:
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FcnkitError(f"synthetic data: cannot create {e.filename}: {e.strerror}") from None
    jobs = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    for split, i in tqdm(jobs, desc="synthetic", unit="img", disable=None):
        rgb, label = render(sample_rng(seed, split, i), tuple(size), n_classes, void_border)
        name = item_name(split, i)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
        write_bytes_atomic(dirs["JPEGImages"] / f"{name}.jpg", buf.getvalue())
        write_label_png(dirs["SegmentationClass"] / f"{name}.png", label)
    for split, n in (("train", n_train), ("val", n_val)):
        write_text_atomic(dirs["ImageSets/Segmentation"] / f"{split}.txt",
                          "".join(f"{item_name(split, i)}\n" for i in range(n)))
    return root


class SyntheticSegDataset(SegDataset):
    """The same images rendered in memory (no JPEG round trip), item i of `split`."""

    LAYER = "SyntheticSegDataLayer"
    SURVEY_ITEMS = 0  # rendered labels, right by construction: nothing to read at setup
    PARAMS = {
        "split": P.Param(P.string, "train"),
        "n_classes": P.Param(P.positive_int, 5, "object classes (background extra)"),
        "size": P.Param(P.size, (64, 64), "(H, W)"),
        "length": P.Param(P.positive_int, 100, "items in the split"),
        "data_seed": P.Param(P.seed, 0, "seed of the image content"),
        "void_border": P.Param(P.flag, True, "void band along object edges"),
    }

    @property
    def n_classes(self) -> int:
        return self.params["n_classes"] + 1

    def _list_ids(self) -> list[str]:
        if self.params["n_classes"] > MAX_CLASSES:
            raise FcnkitError(f"{self.layer}: param_str key 'n_classes' must be at most "
                              f"{MAX_CLASSES}")
        return [item_name(self.split, i) for i in range(self.params["length"])]

    def load(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"{self.layer}: item {i} out of range 0..{len(self) - 1}")
        p = self.params
        rgb, label = render(sample_rng(p["data_seed"] or 0, self.split, i), p["size"],
                            p["n_classes"], p["void_border"])
        return {"data": to_caffe_input(rgb, self.mean), "label": label[np.newaxis]}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m solvers.data.synthetic",
                                 description="Write a synthetic VOC-layout dataset.")
    ap.add_argument("out", help="output folder (created)")
    ap.add_argument("--train", type=int, default=200, help="training images (200)")
    ap.add_argument("--val", type=int, default=50, help="validation images (50)")
    ap.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    ap.add_argument("--classes", type=int, default=5,
                    help=f"object classes, 1..{MAX_CLASSES}, plus background (5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-void-border", action="store_true", help="no 255 band at edges")
    a = ap.parse_args(argv)
    root = make_synthetic_voc(a.out, a.train, a.val, tuple(a.size), a.classes, a.seed,
                              not a.no_void_border)
    print(f"wrote {a.train} train + {a.val} val images ({a.classes} classes + background) "
          f"to {root}")
    return 0


if __name__ == "__main__":
    main()
