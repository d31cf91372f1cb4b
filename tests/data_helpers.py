"""Writers for tiny dataset fixtures in the real on-disk formats (JPEG, palette PNG, .mat)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image

from solvers.engine.blob import Blob
from solvers.engine.pylayer import PyBlob, RawBlobVec
from solvers.palette import voc_palette


def blob_vector(n: int) -> RawBlobVec:
    """n empty host blobs as pycaffe hands them to a Python layer (the engine's RawBlobVec)."""
    return RawBlobVec([PyBlob(Blob(f"top{i}", torch.zeros(0), host=True)) for i in range(n)])


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_rgb(path: Path, rgb: np.ndarray, fmt: str | None = None) -> Path:
    """Lossless formats keep pixels exact; JPEG is written at quality 100."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"quality": 100} if path.suffix == ".jpg" else {}
    Image.fromarray(rgb, mode="RGB").save(path, format=fmt, **extra)
    return path


def write_index_png(path: Path, label: np.ndarray, palette: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        img.putpalette(voc_palette().reshape(-1).tolist())
    img.save(path)
    return path


def write_mat(path: Path, **variables) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), variables)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x}\n" for x in lines))
    return path
