"""Segmentation scores from a confusion histogram, as the FCN paper reports them.

hist[i, j] counts pixels of true class i predicted as j. From it: overall pixel accuracy,
mean (per-class) accuracy, mean IU and frequency-weighted IU. A class absent from both the
ground truth and the predictions has an undefined IU and is left out of the means (NaN);
one only predicted has IU 0 and counts.

    python -m solvers.score PRED_DIR GT_DIR --classes 21 [--names voc] [--out DIR]

The CLI prints the per-class table and writes the row-normalised confusion matrix as a PNG
(plot_confusion) with the scores as JSON and CSV for scripts (write_scores).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from netgen.errors import FcnkitError, cli_entry
from netgen.fileio import atomic_write, write_text_atomic
from solvers.cliargs import Parser
from solvers.data.classes import CLASS_NAMES, class_names
from solvers.data.labels import label_map as label_map_check
from solvers.data.labels import out_of_range, remap, score_warnings, warn
from solvers.data.readers import read_index_png

VOID = 255


def fast_hist(label: np.ndarray, pred: np.ndarray, n: int,
              ignore_label: int | None = VOID) -> np.ndarray:
    """n x n int64 confusion counts over pixels whose label is in 0..n-1 (and not ignored).

    Predictions on those pixels must be classes 0..n-1.
    """
    label, pred = np.asarray(label), np.asarray(pred)
    if label.shape != pred.shape:
        raise FcnkitError(f"label shape {label.shape} differs from prediction shape "
                          f"{pred.shape}")
    label, pred = label.reshape(-1).astype(np.int64), pred.reshape(-1).astype(np.int64)
    keep = (label >= 0) & (label < n)
    if ignore_label is not None:
        keep &= label != ignore_label
    label, pred = label[keep], pred[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= n):
        bad = pred[(pred < 0) | (pred >= n)][0]
        raise FcnkitError(f"prediction has class {bad}, outside 0..{n - 1}")
    return np.bincount(n * label + pred, minlength=n * n).reshape(n, n)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den == 0, without warnings."""
    out = np.full(np.shape(num), np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=np.asarray(den) != 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def metrics(hist: np.ndarray) -> dict:
    """Scores of a confusion histogram.

    Keys: pixel_acc, mean_acc, mean_iu, fw_iu (floats; NaN when undefined), per_class_acc,
    per_class_iu (arrays, NaN for undefined classes), n_pixels (int).
    """
    hist = np.asarray(hist, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise FcnkitError(f"confusion histogram must be square, got shape {hist.shape}")
    if (hist < 0).any():
        raise FcnkitError("confusion histogram has negative counts")
    total = hist.sum()
    diag, gt, predicted = np.diag(hist), hist.sum(1), hist.sum(0)
    acc = _ratio(diag, gt)
    iu = _ratio(diag, gt + predicted - diag)
    freq = gt / total if total else np.zeros_like(gt)
    return {
        "pixel_acc": float(diag.sum() / total) if total else float("nan"),
        "mean_acc": _nanmean(acc),
        "mean_iu": _nanmean(iu),
        "fw_iu": float((freq[freq > 0] * iu[freq > 0]).sum()) if total else float("nan"),
        "per_class_acc": acc,
        "per_class_iu": iu,
        "n_pixels": int(total),
    }


def _pct(x: float) -> str:
    return "   n/a" if np.isnan(x) else f"{100 * x:6.2f}"


def format_table(m: dict, class_names: Sequence[str] | None = None) -> str:
    """Per-class IU / accuracy rows, then the four summary scores, as plain text (percent)."""
    iu, acc = m["per_class_iu"], m["per_class_acc"]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iu))]
    if len(names) != len(iu):
        raise FcnkitError(f"{len(names)} class names for {len(iu)} classes")
    width = max([len("class")] + [len(n) for n in names])
    lines = [f"{'id':>3}  {'class':<{width}}  {'IU':>6}  {'acc':>6}"]
    lines += [f"{i:>3}  {n:<{width}}  {_pct(iu[i])}  {_pct(acc[i])}"
              for i, n in enumerate(names)]
    lines.append("")
    lines += [f"{label:<23}{_pct(m[key])}" for label, key in (
        ("pixel accuracy", "pixel_acc"), ("mean accuracy", "mean_acc"),
        ("mean IU", "mean_iu"), ("frequency-weighted IU", "fw_iu"))]
    lines.append(f"{'pixels scored':<23}{m['n_pixels']:>6}")
    return "\n".join(lines)


def normalised_confusion(hist: np.ndarray) -> np.ndarray:
    """Each true class's row of the confusion histogram divided by its pixel count: entry
    [i, j] is the fraction of class i's pixels predicted as j (the diagonal is the per-class
    accuracy); rows of classes absent from the ground truth are NaN."""
    hist = np.asarray(hist, dtype=np.float64)
    return _ratio(hist, hist.sum(1, keepdims=True) + np.zeros_like(hist))


SCORE_FILES = ("confusion.png", "scores.json", "scores.csv")


def plot_confusion(hist: np.ndarray, path: Path,
                   class_names: Sequence[str] | None = None, title: str = "") -> Path:
    """The row-normalised confusion matrix (normalised_confusion) as a PNG heat map, true
    class down, predicted class across, percentages written in the cells up to 30 classes;
    rows of classes absent from the ground truth are grey."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = normalised_confusion(hist)
    n = len(norm)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    side = min(40.0, max(5.0, 0.42 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="0.85")  # grey: class not in truth
    image = ax.imshow(np.ma.masked_invalid(100 * norm), cmap=cmap, vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of the true class's pixels")
    font = max(4.0, min(10.0, 160 / n))
    labels = [f"{i} {name}" for i, name in enumerate(names)]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 30:
        for i, j in np.ndindex(n, n):
            if norm[i, j] >= 0.005:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center",
                        fontsize=font, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix, rows normalised", fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def write_scores(out: str | Path, hist: np.ndarray,
                 class_names: Sequence[str] | None = None) -> list[Path]:
    """Write the confusion matrix PNG, scores.json (summary scores, per-class IU / accuracy,
    the raw histogram) and scores.csv (one row per class) into `out`; returns the files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = metrics(hist)
    n = len(m["per_class_iu"])
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise FcnkitError(f"{len(names)} class names for {n} classes")
    value = lambda x: None if np.isnan(x) else float(x)  # JSON has no NaN
    counts = np.asarray(hist, dtype=np.int64)
    classes = [{"id": i, "name": names[i], "iu": value(m["per_class_iu"][i]),
                "acc": value(m["per_class_acc"][i]), "pixels": int(counts[i].sum()),
                "predicted": int(counts[:, i].sum())} for i in range(n)]
    summary = {k: value(m[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}
    report = {**summary, "n_pixels": m["n_pixels"], "classes": classes,
              "confusion": counts.tolist()}
    png, js, csv_path = (out / name for name in SCORE_FILES)
    plot_confusion(hist, png, names, f"confusion matrix, rows normalised  (mean IU "
                   f"{_pct(m['mean_iu']).strip()}, pixel acc {_pct(m['pixel_acc']).strip()})")
    write_text_atomic(js, json.dumps(report, indent=1) + "\n")
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=list(classes[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(classes)
    write_text_atomic(csv_path, rows.getvalue())
    return [png, js, csv_path]


OVERLAY_SUFFIX = "_overlay"  # infer.py writes <stem>_overlay.png beside <stem>.png


def _png_stems(folder: Path, what: str) -> dict[str, Path]:
    """stem -> PNG file; infer.py's colour overlays beside their label PNGs are skipped."""
    if not folder.is_dir():
        raise FcnkitError(f"{what} folder {folder} not found")
    stems = {p.stem: p for p in sorted(folder.glob("*.png")) if p.is_file()}
    stems = {stem: p for stem, p in stems.items()
             if not (stem.endswith(OVERLAY_SUFFIX) and stem[:-len(OVERLAY_SUFFIX)] in stems)}
    if not stems:
        raise FcnkitError(f"{what} folder {folder} has no .png files")
    return stems


def _unmatched(names: set[str], where: Path) -> str:
    shown = ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
    return f"{len(names)} file(s) only in {where}: {shown}"


def score_dirs(pred_dir: str | Path, gt_dir: str | Path, n_classes: int,
               ignore_label: int | None = VOID,
               label_map: dict[int, int] | None = None) -> np.ndarray:
    """Confusion histogram of every PRED_DIR/x.png against GT_DIR/x.png (index PNGs).
    Ground truth labels outside 0..n_classes-1 (not ignored) are counted and reported on
    stderr, never scored as a class; so are classes the ground truth never holds.
    label_map: {raw ground truth value: class} applied before scoring (e.g. {255: 1}).

    Every prediction needs its ground truth; the ground truth folder may hold more files (VOC's
    SegmentationClass holds every split). Each pair must have the same size.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds, gts = _png_stems(pred_dir, "prediction"), _png_stems(gt_dir, "ground truth")
    only = set(preds) - set(gts)
    if only:
        raise FcnkitError(f"unmatched files: {_unmatched(only, pred_dir)} (no ground truth "
                          f"in {gt_dir})")
    hist = np.zeros((n_classes, n_classes), dtype=np.int64)
    unscored: dict[str, int] = {}  # ground truth file -> pixels outside the classes, not ignored
    for stem in tqdm(sorted(preds), desc="scoring", unit="img", disable=None):
        gt = remap(read_index_png(gts[stem], "ground truth"), label_map)
        pred = read_index_png(preds[stem], "prediction")
        if gt.shape != pred.shape:
            raise FcnkitError(f"{preds[stem]} is {pred.shape[1]}x{pred.shape[0]} but "
                              f"{gts[stem]} is {gt.shape[1]}x{gt.shape[0]}")
        try:
            hist += fast_hist(gt, pred, n_classes, ignore_label)
        except FcnkitError as e:
            raise FcnkitError(f"{preds[stem]}: {e}") from None
        bad = int(out_of_range(gt, n_classes, ignore_label).sum())
        if bad:
            unscored[str(gts[stem])] = bad
    where = f"ground truth {gt_dir}" + (f" (e.g. {next(iter(unscored))})" if unscored else "")
    for message in score_warnings(hist, where, sum(unscored.values()), CLI_HINT):
        warn(message)
    return hist


CLI_HINT = "remap raw values with --label-map, e.g. --label-map 255:1 for masks saved as 0/255"


def parse_label_map(text: str) -> dict[int, int]:
    """"255:1" or "38:1,75:2" -> {raw value: class}, values 0..255."""
    try:
        pairs = [item.split(":") for item in text.split(",")]
        return label_map_check({int(raw): int(cls) for raw, cls in pairs})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected RAW:CLASS pairs of 0..255 separated by "
                                         f"commas, got {text!r} ({e})") from None


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m solvers.score",
                description="Score label PNGs (infer.py's output folder, say) against ground "
                "truth PNGs of the same names.")
    ap.add_argument("pred_dir", help="predicted label PNGs (class indices)")
    ap.add_argument("gt_dir", help="ground truth label PNGs with the same file names (may "
                    "hold more, e.g. VOC's SegmentationClass)")
    ap.add_argument("--classes", type=int, required=True, help="number of classes")
    ap.add_argument("--names", choices=sorted(CLASS_NAMES), help="class name list")
    ap.add_argument("--ignore", type=int, default=VOID, help="ignored label (255)")
    ap.add_argument("--label-map", type=parse_label_map, metavar="RAW:CLASS,...",
                    help="remap ground truth values before scoring, e.g. 255:1 for binary "
                    "masks saved as 0/255")
    ap.add_argument("--out", help="folder for confusion.png, scores.json and scores.csv "
                    "(default: PRED_DIR/scores)")
    a = ap.parse_args(argv)
    if not 1 <= a.classes <= 256:
        raise FcnkitError(f"--classes must be 1..256, got {a.classes}")
    names = class_names(a.names, a.classes) if a.names else None
    hist = score_dirs(a.pred_dir, a.gt_dir, a.classes, a.ignore, a.label_map)
    print(format_table(metrics(hist), names), flush=True)  # shown even if the files fail
    files = write_scores(Path(a.out) if a.out else Path(a.pred_dir) / "scores", hist, names)
    print(f"confusion matrix and scores: {', '.join(map(str, files))}")
    print(f"{'images scored':<23}{len(_png_stems(Path(a.pred_dir), 'prediction')):>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
