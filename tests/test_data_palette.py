"""VOC palette, palette PNG writing and overlays."""
import numpy as np
import pytest
from PIL import Image

from netgen.errors import FcnkitError
from solvers.data.classes import VOC as VOC_NAMES
from solvers.palette import (colorize, comparison, overlay, text_size, voc_palette,
                             write_label_png)


def bitwise_colour(i):
    """Independent per-index construction of the VOC colour map."""
    r = g = b = 0
    for j in range(8):
        r |= ((i >> (3 * j)) & 1) << (7 - j)
        g |= ((i >> (3 * j + 1)) & 1) << (7 - j)
        b |= ((i >> (3 * j + 2)) & 1) << (7 - j)
    return r, g, b


def test_palette_values():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert tuple(pal[0]) == (0, 0, 0) and tuple(pal[1]) == (128, 0, 0)
    assert tuple(pal[15]) == (192, 128, 128)  # person
    assert tuple(pal[255]) == (224, 224, 192)  # void
    assert all(tuple(pal[i]) == bitwise_colour(i) for i in range(256))
    assert len({tuple(c) for c in pal}) == 256


def test_write_label_png_roundtrip(tmp_path):
    label = np.array([[0, 1, 255], [20, 3, 0]], np.uint8)
    path = tmp_path / "x.png"
    write_label_png(path, label[None])
    img = Image.open(path)
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), label)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp files left
    with pytest.raises(FcnkitError, match="0..255"):
        write_label_png(tmp_path / "y.png", np.array([[256]]))
    with pytest.raises(FcnkitError, match="does not exist"):
        write_label_png(tmp_path / "no" / "y.png", label)
    assert not (tmp_path / "y.png").exists()


def test_overlay_and_legend():
    rgb = np.full((20, 30, 3), 100, np.uint8)
    label = np.zeros((20, 30), np.uint8)
    label[:, 10:] = 15
    label[:, 20:] = 255
    img = overlay(rgb, label, ["background"] + ["c"] * 14 + ["person"], alpha=0.5)
    arr = np.asarray(img)
    assert img.width > 30  # legend panel added
    np.testing.assert_array_equal(arr[0, 25], [100, 100, 100])  # void unblended
    np.testing.assert_array_equal(arr[0, 15], [146, 114, 114])  # (100+192)/2, (100+128)/2
    np.testing.assert_array_equal(arr[0, 5], [50, 50, 50])
    plain = overlay(rgb, label, legend=False)
    assert plain.size == (30, 20)
    np.testing.assert_array_equal(colorize(label)[0, 15], [192, 128, 128])
    with pytest.raises(FcnkitError, match="image is 30x20 but label is 29x20"):
        overlay(rgb, label[:, :29])


def test_comparison_panels_show_image_truth_and_prediction():
    rgb = np.full((32, 40, 3), 90, np.uint8)
    truth = np.zeros((32, 40), np.uint8)
    truth[8:16, 8:16] = 1
    truth[16, :] = 255
    pred = truth.copy()
    pred[16, :] = 0
    pred[20:, 30:] = 2
    img = np.asarray(comparison(rgb, truth, pred, ["bg", "a", "b"], min_side=64))
    zoom, size = 2, text_size(64)
    caption, gap = round(size * 1.5), max(4, size // 3)
    w = 40 * zoom
    pal = voc_palette()
    body = lambda k, y, x: img[caption + y * zoom, k * (w + gap) + x * zoom]
    assert (body(0, 10, 10) == 90).all()                # the plain image
    assert (body(1, 10, 10) == pal[1]).all()            # ground truth class 1, solid
    assert (body(1, 25, 35) == pal[0]).all()
    assert (body(1, 16, 3) == pal[255]).all()           # void in the palette's void colour
    assert (body(2, 25, 35) == pal[2]).all()            # predicted class 2, solid
    assert (body(2, 16, 3) == pal[0]).all()
    assert img.shape[0] == caption + 32 * zoom and img.shape[1] > 3 * w + 2 * gap  # legend
    legend = img[:, 3 * w + 2 * gap:]
    for c in (0, 1, 2, 255):  # a swatch per class of either label, and one for void
        assert (legend == pal[c]).all(-1).sum() >= (size - 2) ** 2


def test_legend_scales_with_the_image_and_names_void():
    assert text_size(128) == 12 and text_size(3000) == 83
    label = np.zeros((3000, 120), np.uint8)  # the legend follows the height (a 3000x3000
    label[:1000] = 15                          # photo's legend, without its pixels)
    label[-10:] = 255
    rgb = np.zeros((3000, 120, 3), np.uint8)
    big = overlay(rgb, label, list(VOC_NAMES), legend=True)
    small = overlay(rgb[:150], label[:150], list(VOC_NAMES), legend=True)
    big_legend = np.asarray(big)[:, 120:]
    small_legend = np.asarray(small)[:, 120:]
    assert big_legend.shape[1] > 4 * small_legend.shape[1]  # text grows with the image

    def ink_rows(a):  # rows of the legend with dark text or outline in them
        rows = np.flatnonzero((a.min(-1) < 80).any(1))
        return rows.max() - rows.min() + 1
    assert ink_rows(big_legend) > 5 * ink_rows(small_legend)
    # swatches: person's colour, 83 px squares (5 px outline) in the big one
    assert (big_legend == voc_palette()[15]).all(-1).sum() >= 70 * 70
    # void has an entry whose swatch is empty (the image shows through void in an overlay)
    assert _legend_texts(label, list(VOC_NAMES))[-1] == "void / ignored"
    assert "void / ignored" not in _legend_texts(label[:1000], list(VOC_NAMES))


def _legend_texts(label, names):
    from solvers.palette import VOID_NAME, _present
    return [VOID_NAME if c == 255 else names[c] for c in _present(label)]
