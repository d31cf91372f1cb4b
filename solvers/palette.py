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


VOID_NAME = "void / ignored"


def text_size(height: int) -> int:
    """Legend and caption font size in pixels for a picture `height` pixels high: 1/36 of it,
    at least 12, so names stay readable from a 128-pixel panel to a 3000-pixel photo."""
    return max(12, round(height / 36))


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (Pillow >= 10.1)


def overlay(image: np.ndarray | Image.Image, label: np.ndarray,
            class_names: list[str] | tuple[str, ...] | None = None, alpha: float = 0.5,
            palette: np.ndarray | None = None, legend: bool = True) -> Image.Image:
    """Blend the label's colours over an RGB image (void stays unblended) and add a legend.

    The legend, to the right of the image and scaled to its height (text_size), lists each
    class present in `label` with its colour swatch and name (or index when no names are
    given), and a "void / ignored" entry (an empty swatch: the image shows through) when
    void pixels are present.
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
    return _with_legend(blended, _present(label), class_names, palette, void_swatch=None)


def _present(*labels: np.ndarray) -> list[int]:
    """Classes found in the labels, void (255) last when present."""
    found = sorted({int(c) for lab in labels for c in np.unique(_check_label(lab))})
    return [c for c in found if c != VOID] + [c for c in found if c == VOID]


def comparison(image: np.ndarray | Image.Image, truth: np.ndarray, prediction: np.ndarray,
               class_names: list[str] | tuple[str, ...] | None = None,
               palette: np.ndarray | None = None, min_side: int = 256) -> Image.Image:
    """Image | ground truth | prediction side by side, the labels in solid palette colours
    (void in the palette's void colour) so a region's colour is the legend's, captioned,
    enlarged with nearest-neighbour sampling to at least `min_side` pixels high, with one
    legend (scaled to the panel height) for the classes of both labels, void included."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    truth, prediction = _check_label(truth), _check_label(prediction)
    for what, lab in (("ground truth", truth), ("prediction", prediction)):
        if rgb.shape[:2] != lab.shape:
            raise FcnkitError(f"comparison: image is {rgb.shape[1]}x{rgb.shape[0]} but "
                              f"{what} is {lab.shape[1]}x{lab.shape[0]}")
    panels = [Image.fromarray(np.ascontiguousarray(rgb[..., :3]), mode="RGB")]
    panels += [Image.fromarray(colorize(lab, palette), mode="RGB") for lab in (truth, prediction)]
    zoom = max(1, -(-min_side // panels[0].height))
    w, h = panels[0].width * zoom, panels[0].height * zoom
    size = text_size(h)
    caption, gap = round(size * 1.5), max(4, size // 3)
    strip = Image.new("RGB", (3 * w + 2 * gap, h + caption), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = _font(size)
    for k, (panel, title) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
        strip.paste(panel.resize((w, h), Image.NEAREST), (k * (w + gap), caption))
        draw.text((k * (w + gap) + gap // 2, caption // 2), title, fill=(0, 0, 0), font=font,
                  anchor="lm")
    pal = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    return _with_legend(strip, _present(truth, prediction), class_names, palette,
                        void_swatch=tuple(int(v) for v in pal[VOID]), text_height=h)


def _with_legend(img: Image.Image, classes: list[int], names, palette,
                 void_swatch: tuple[int, int, int] | None,
                 text_height: int | None = None) -> Image.Image:
    """`img` with a legend to its right: swatch and "index name" per class, void as
    VOID_NAME (void_swatch colour, or an empty swatch where the image shows through), in
    as many columns as the height needs. Text is text_size(text_height or img.height)."""
    pal = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    size = text_size(text_height or img.height)
    font = _font(size)
    swatch, pad = size, max(4, size // 3)
    row = swatch + pad
    entries = [(VOID_NAME if c == VOID else
                f"{c} {names[c]}" if names is not None and c < len(names) else str(c), c)
               for c in classes]
    if not entries:
        return img
    probe = ImageDraw.Draw(img)
    text_w = max(int(probe.textlength(text, font=font)) for text, _ in entries)
    per_col = max(1, (img.height - pad) // row)
    cols = -(-len(entries) // per_col)
    col_w = swatch + 2 * pad + text_w
    canvas = Image.new("RGB", (img.width + pad + cols * col_w,
                               max(img.height, pad + min(per_col, len(entries)) * row)),
                       (255, 255, 255))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    outline = max(1, size // 16)
    for k, (text, c) in enumerate(entries):
        x = img.width + pad + (k // per_col) * col_w
        y = pad + (k % per_col) * row
        fill = void_swatch if c == VOID else tuple(int(v) for v in pal[c])
        draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=fill, outline=(0, 0, 0),
                       width=outline)
        draw.text((x + swatch + pad, y + swatch // 2), text, fill=(0, 0, 0), font=font,
                  anchor="lm")
    return canvas
