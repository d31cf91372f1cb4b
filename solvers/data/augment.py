"""Seeded training augmentation applied alike to every top of one sample: scale, mirror, crop.

Image-like tops (float, already mean-subtracted) are resized bilinearly and padded with 0
(= the mean colour); label tops are resized nearest-neighbour and padded with 255 (void), so
padding never counts in the loss. A fixed crop size lets batches of differently sized images
stack.

Each call draws from its own generator, derived from (seed, number of the draw): skipping n
draws (a resumed run passing over the items already trained on) is exact and needs no image.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from netgen.errors import FcnkitError

from .readers import MAX_PIXELS

IMAGE, LABEL = "image", "label"
PAD = {IMAGE: 0.0, LABEL: 255}
INTERP = {IMAGE: cv2.INTER_LINEAR, LABEL: cv2.INTER_NEAREST}


def _resize(arr: np.ndarray, hw: tuple[int, int], kind: str) -> np.ndarray:
    """Resize a CxHxW array to hw = (H, W)."""
    hwc = np.ascontiguousarray(arr.transpose(1, 2, 0))
    out = cv2.resize(hwc, (hw[1], hw[0]), interpolation=INTERP[kind])
    if out.ndim == 2:
        out = out[:, :, np.newaxis]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _pad_to(arr: np.ndarray, hw: tuple[int, int], kind: str) -> np.ndarray:
    """Pad bottom/right so the array is at least hw."""
    ph, pw = max(0, hw[0] - arr.shape[1]), max(0, hw[1] - arr.shape[2])
    if not ph and not pw:
        return arr
    return np.pad(arr, ((0, 0), (0, ph), (0, pw)), constant_values=PAD[kind])


@dataclass
class Augment:
    """mirror: random horizontal flip; scale: (low, high) factor range; crop: (H, W)."""

    mirror: bool = False
    scale: tuple[float, float] | None = None
    crop: tuple[int, int] | None = None
    seed: int | None = None
    draws: int = field(default=0, init=False)  # draws so far: the next draw's number
    _entropy: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._entropy = np.random.SeedSequence(self.seed).entropy  # seed None: fresh entropy

    def skip(self, n: int) -> None:
        """Pass over the next n draws, as n calls would."""
        self.draws += n

    def _rng(self) -> np.random.Generator:
        """The generator of the next draw (and count it)."""
        seq = np.random.SeedSequence(self._entropy, spawn_key=(self.draws,))
        self.draws += 1
        return np.random.default_rng(seq)

    @property
    def active(self) -> bool:
        return bool(self.mirror or self.scale or self.crop)

    def __call__(self, sample: dict[str, np.ndarray], kinds: dict[str, str]
                 ) -> dict[str, np.ndarray]:
        """Apply one random draw of the augmentation to all tops of `sample` (CxHxW arrays)."""
        if not self.active:
            return sample
        rng = self._rng()
        out = dict(sample)
        h, w = next(iter(out.values())).shape[-2:]
        if self.scale:
            s = rng.uniform(*self.scale)
            hw = (max(1, round(h * s)), max(1, round(w * s)))
            if hw[0] * hw[1] > MAX_PIXELS:
                raise FcnkitError(f"scale {s:.3g} makes a {h}x{w} item {hw[0]}x{hw[1]}, more "
                                  f"than {MAX_PIXELS} pixels; lower param_str's scale")
            out = {k: _resize(v, hw, kinds[k]) for k, v in out.items()}
            h, w = hw
        if self.mirror and rng.random() < 0.5:
            out = {k: v[:, :, ::-1] for k, v in out.items()}
        if self.crop:
            out = {k: _pad_to(v, self.crop, kinds[k]) for k, v in out.items()}
            h, w = max(h, self.crop[0]), max(w, self.crop[1])
            y = int(rng.integers(0, h - self.crop[0] + 1))
            x = int(rng.integers(0, w - self.crop[1] + 1))
            out = {k: v[:, y:y + self.crop[0], x:x + self.crop[1]] for k, v in out.items()}
        return {k: np.ascontiguousarray(v) for k, v in out.items()}
