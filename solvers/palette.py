"""PASCAL VOC colour palette, palette-mode label PNGs, and colour overlays with a class legend.

Label PNGs hold class indices (255 = void) in palette ("P") mode, as VOC's SegmentationClass
does, so they read back as indices and still look right in an image viewer.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from netgen.errors import FcnkitError
from netgen.fileio import atomic_write

VOID = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC colour map: bits of the index interleaved into R, G, B from the high bit down.

    Returns an (n, 3) uint8 array; index 0 is black, 1 (128,0,0), 255 (224,224,192).
    """
    idx = np.arange(n)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):
        for ch in range(3):
            rgb[:, ch] |= ((idx >> (3 * j + ch)) & 1) << (7 - j)
    return rgb.astype(np.uint8)


def _check_label(label: np.ndarray) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 2:
        raise FcnkitError(f"label must be HxW (or 1xHxW), got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise FcnkitError(f"label values must lie in 0..255, got {label.min()}..{label.max()}")
    return label.astype(np.uint8)


def label_image(label: np.ndarray, palette: np.ndarray | None = None) -> Image.Image:
    """A palette-mode PIL image of an HxW index array."""
    img = Image.fromarray(_check_label(label), mode="P")
    pal = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    img.putpalette(pal.reshape(-1).tolist())
    return img


def write_label_png(path: str | os.PathLike, label: np.ndarray,
                    palette: np.ndarray | None = None) -> None:
    """Write `label` (HxW class indices, 255 void) as a palette PNG, atomically."""
    img = label_image(label, palette)
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """HxW indices -> HxWx3 uint8 RGB through the palette."""
    pal = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    return pal[_check_label(label)]


def overlay(image: np.ndarray | Image.Image, label: np.ndarray,
            class_names: list[str] | tuple[str, ...] | None = None, alpha: float = 0.5,
            palette: np.ndarray | None = None, legend: bool = True) -> Image.Image:
    """Blend the label's colours over an RGB image (void stays unblended) and add a legend.

    The legend, to the right of the image, lists each class present in `label` with its
    colour swatch and name (or index when no names are given).
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    label = _check_label(label)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FcnkitError(f"overlay needs an HxWx3 RGB image, got shape {rgb.shape}")
    if rgb.shape[:2] != label.shape:
        raise FcnkitError(f"overlay: image is {rgb.shape[1]}x{rgb.shape[0]} but label is "
                          f"{label.shape[1]}x{label.shape[0]}")
    if not 0.0 <= alpha <= 1.0:
        raise FcnkitError(f"overlay: alpha must be in [0, 1], got {alpha}")
    colour = colorize(label, palette).astype(np.float32)
    out = rgb.astype(np.float32)
    valid = label != VOID
    out[valid] = (1 - alpha) * out[valid] + alpha * colour[valid]
    blended = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    if not legend:
        return blended
    present = [int(c) for c in np.unique(label) if c != VOID]
    return _with_legend(blended, present, class_names, palette)


def comparison(image: np.ndarray | Image.Image, truth: np.ndarray, prediction: np.ndarray,
               class_names: list[str] | tuple[str, ...] | None = None, alpha: float = 0.5,
               palette: np.ndarray | None = None, min_side: int = 256) -> Image.Image:
    """Image | ground truth | prediction side by side (each blended over the image), captioned,
    enlarged with nearest-neighbour sampling to at least `min_side` pixels high, with one legend
    for the classes of both labels."""
    panels = [overlay(image, label, alpha=alpha, palette=palette, legend=False)
              for label in (np.full_like(_check_label(truth), VOID), truth, prediction)]
    zoom = max(1, -(-min_side // panels[0].height))
    caption, gap = 14, 4
    w, h = panels[0].width * zoom, panels[0].height * zoom
    strip = Image.new("RGB", (3 * w + 2 * gap, h + caption), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, (panel, title) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
        strip.paste(panel.resize((w, h), Image.NEAREST), (k * (w + gap), caption))
        draw.text((k * (w + gap) + 2, 1), title, fill=(0, 0, 0), font=ImageFont.load_default())
    present = sorted({int(c) for lab in (truth, prediction) for c in np.unique(lab) if c != VOID})
    return _with_legend(strip, present, class_names, palette)


def _with_legend(img: Image.Image, classes: list[int], names, palette) -> Image.Image:
    pal = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    font = ImageFont.load_default()
    row, pad = 14, 4
    entries = [f"{c} {names[c]}" if names is not None and c < len(names) else str(c)
               for c in classes]
    draw_probe = ImageDraw.Draw(img)
    text_w = max((int(draw_probe.textlength(e, font=font)) for e in entries), default=0)
    width = img.width + (pad * 3 + row + text_w if entries else 0)
    height = max(img.height, pad + len(entries) * (row + pad))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = img.width + pad
    for k, (c, text) in enumerate(zip(classes, entries)):
        y = pad + k * (row + pad)
        draw.rectangle([x0, y, x0 + row - 1, y + row - 1], fill=tuple(int(v) for v in pal[c]),
                       outline=(0, 0, 0))
        draw.text((x0 + row + pad, y + 1), text, fill=(0, 0, 0), font=font)
    return canvas
