"""Read images, label maps and .mat fields from disk, turning every bad file into FcnkitError.

Also the Caffe input transform every reference layer applies: RGB -> BGR, float32, minus the
per-channel mean, HWC -> CHW.

Images larger than MAX_PIXELS are refused from their header, before any pixel is decoded: a
190 KB PNG can declare 14000x14000 pixels (196 M, 0.6 GB as RGB and 2.4 GB once float32).
The limit, 2**26 pixels (8192x8192, e.g. a 10000x6700 photo), is far above the datasets'
500x500 and 2048x1024 and a 4000x3000 (12 MP) photo, and keeps one image under ~0.8 GB as
float32 RGB. PIL's own bomb check (DecompressionBombError past 2x its 89 MP default) is
thereby never reached.
"""
from __future__ import annotations

import contextlib
import struct
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from netgen.errors import FcnkitError

VOID = 255
MAX_PIXELS = 1 << 26  # 67,108,864 (8192x8192)
WIDE_MODES = frozenset({"I", "F"})  # 32-bit int and float (and I;16*): not 8-bit colour
# What PIL raises for files that are corrupt in ways its decoders do not translate to OSError.
# MemoryError too: PIL reads a chunk's declared length in one go (PngImagePlugin.load_end), so
# a corrupt length asks for up to 2 GiB of address space (never touched) and can fail.
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, EOFError,
                IndexError, KeyError, struct.error, ZeroDivisionError, OverflowError,
                MemoryError, Image.DecompressionBombError)


def _need_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FcnkitError(f"{what} {path} not found")


def check_pixels(path: Path, size: tuple[int, int], what: str = "image") -> None:
    """FcnkitError for a W x H `size` of no pixels or more than MAX_PIXELS."""
    width, height = size
    if width < 1 or height < 1:
        raise FcnkitError(f"{what} {path} has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise FcnkitError(f"{what} {path} is {width}x{height} = {width * height / 1e6:.0f} M "
                          f"pixels; more than {MAX_PIXELS / 1e6:.0f} M is refused "
                          "(a decompression bomb or a mistake; downscale it)")


@contextlib.contextmanager
def image_header(path: Path, what: str = "image") -> Iterator[Image.Image]:
    """The image at `path` opened (header read, pixels not decoded), its size checked against
    MAX_PIXELS; inside the block, PIL errors become FcnkitError naming the file."""
    _need_file(path, what)
    try:
        with warnings.catch_warnings():  # our limit is lower: no DecompressionBombWarning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixels(path, img.size, what)
                yield img
    except Image.DecompressionBombError:  # past PIL's 2x89 M pixels, raised before the size
        raise FcnkitError(f"{what} {path} has more than {MAX_PIXELS / 1e6:.0f} M pixels; "
                          "refused (a decompression bomb or a mistake; downscale it)") from None
    except IMAGE_ERRORS as e:
        raise FcnkitError(f"{what} {path} cannot be read as an image: {e}") from None


def open_image(path: Path, what: str = "image") -> Image.Image:
    """The decoded image at `path`; FcnkitError for a missing, corrupt, truncated or too large
    (MAX_PIXELS, checked from the header before decoding) file."""
    with image_header(path, what) as img:
        img.load()
    return img  # leaving the block closed the file only; the decoded pixels stay


def _convert(img: Image.Image, mode: str, path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(img if img.mode == mode else img.convert(mode))
    except IMAGE_ERRORS as e:  # odd modes (I;16B, F, CMYK variants) PIL cannot convert
        raise FcnkitError(f"{what} {path}: mode {img.mode} cannot be read as {mode}: {e}") from None


def read_rgb(path: Path, what: str = "image") -> np.ndarray:
    """HxWx3 uint8 RGB (grey, palette, CMYK... images are converted to RGB).

    16-bit and float images are refused: PIL would clip them to 0..255 silently.
    """
    img = open_image(path, what)
    if img.mode in WIDE_MODES or img.mode.startswith("I;16"):
        raise FcnkitError(f"{what} {path} is mode {img.mode} (16-bit or float); expected an "
                          "8-bit colour or grey image")
    return _convert(img, "RGB", path, what)


def read_index_png(path: Path, what: str = "label") -> np.ndarray:
    """HxW uint8 class indices from a palette (P) or greyscale (L) PNG.

    A colour (RGB/RGBA) label is refused: its pixels are colours, not class indices.
    """
    img = open_image(path, what)
    if img.mode not in ("P", "L"):
        kind = "an RGB colour image" if img.mode in ("RGB", "RGBA") else f"mode {img.mode}"
        raise FcnkitError(f"{what} {path} is {kind}; expected palette indices (mode P or L)")
    return np.asarray(img, dtype=np.uint8)


def read_color_png(path: Path, what: str = "label") -> np.ndarray:
    """HxWx3 uint8 RGB of a colour-coded ground truth; greyscale or palette is refused."""
    img = open_image(path, what)
    if img.mode not in ("RGB", "RGBA"):
        raise FcnkitError(f"{what} {path} is mode {img.mode}; expected an RGB colour image")
    return _convert(img, "RGB", path, what)


def read_uint16_channels(path: Path, what: str = "label") -> np.ndarray:
    """HxWxC array of a PNG read unchanged (cv2 keeps 16 bits; channels in file order RGB)."""
    import cv2

    with image_header(path, what):  # the size from the header, before OpenCV decodes
        pass
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # ours is the one line
    try:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. a width past OpenCV's CV_IO_MAX_IMAGE_WIDTH (2**20)
        raise FcnkitError(f"{what} {path} cannot be read as an image: "
                          f"{str(e).strip().splitlines()[-1]}") from None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if arr is None:
        raise FcnkitError(f"{what} {path} cannot be read as an image")
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise FcnkitError(f"{what} {path} has shape {arr.shape}; expected 3 or 4 channels")
    rgb = arr[:, :, 2::-1]  # cv2 gives BGR(A); put channels back in the file's order
    return np.ascontiguousarray(rgb)


def read_gray(path: Path, what: str = "image") -> np.ndarray:
    """HxW array of a single-channel image, keeping its bit depth (8 or 16 bit)."""
    img = open_image(path, what)
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise FcnkitError(f"{what} {path} has {arr.shape[2]} channels; expected one")
    return arr


def read_mat(path: Path, key: str, what: str = "label") -> np.ndarray:
    """The array stored under `key` in a MATLAB .mat file.

    `key` may name a struct field as 'struct.field' (SBD's GTcls.Segmentation).
    """
    import scipy.io

    _need_file(path, what)
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, OSError, TypeError, NotImplementedError) as e:
        raise FcnkitError(f"{what} {path} cannot be read as a .mat file: {e}") from None
    name, _, field = key.partition(".")
    if name not in mat:
        raise FcnkitError(f"{what} {path} has no variable '{name}'")
    value = mat[name]
    if field:
        if value.dtype.names is None or field not in value.dtype.names:
            raise FcnkitError(f"{what} {path}: '{name}' has no field '{field}'")
        value = value[field].flat[0]
    value = np.asarray(value)
    if value.ndim != 2 or not np.issubdtype(value.dtype, np.number):
        raise FcnkitError(f"{what} {path}: '{key}' is not a 2-D numeric array "
                          f"(shape {value.shape}, {value.dtype})")
    return value


def to_caffe_input(rgb: np.ndarray, mean_bgr) -> np.ndarray:
    """RGB HxWx3 -> float32 3xHxW BGR minus mean (Caffe's convention for VGG-style nets)."""
    bgr = np.asarray(rgb, dtype=np.float32)[:, :, ::-1]
    bgr = bgr - np.asarray(mean_bgr, dtype=np.float32)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1))


def shift_void(label: np.ndarray, path: Path, n_classes: int) -> np.ndarray:
    """Labels 1..n -> 0..n-1 and 0 (or negative) -> 255, as 1xHxW uint8.

    Values above n are refused: they mean a file of another dataset or a corrupted one.
    """
    label = np.asarray(label)
    if label.size and label.max() > n_classes:
        raise FcnkitError(f"label {path} has value {int(label.max())}; expected 0..{n_classes}")
    out = np.where(label > 0, label.astype(np.int64) - 1, VOID).astype(np.uint8)
    return out[np.newaxis]


def lookup(label: np.ndarray, table: dict[int, int], size: int = 256) -> np.ndarray:
    """Map raw ids through `table` (anything absent -> 255) as 1xHxW uint8."""
    lut = np.full(size, VOID, dtype=np.uint8)
    for raw, train in table.items():
        lut[raw] = train
    label = np.asarray(label)
    out = np.full(label.shape, VOID, dtype=np.uint8)
    inside = (label >= 0) & (label < size)
    out[inside] = lut[label[inside]]
    return out[np.newaxis]
