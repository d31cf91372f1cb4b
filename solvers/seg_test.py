"""Segmentation test of a val net: confusion histograms of every SoftmaxWithLoss head over
one pass over the val split, scored as the FCN paper reports (solvers.score), and the JSON
record a test writes to metrics.jsonl.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .data.base import SegDataset
from .data.labels import out_of_range
from .progress import bar as progress_bar
from .score import fast_hist, metrics
from .solver_files import Head

SCORE_KEYS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


def _finite(x: Any) -> Any:
    """JSON has no NaN: undefined scores become null."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_finite(v) for v in x]
    x = float(x)
    return x if math.isfinite(x) else None


def val_passes(net: Any, default: int) -> int:
    """Forward passes that show the test net's data layer each of its items once, as the
    reference solve.py scores every image of the val list once; `default` (the solver's
    test_iter) when the net has no fcnkit data layer. A test_iter larger than the val split
    would count images several times, and one that is no multiple of it would score another
    mix of images at each test."""
    for layer in getattr(net, "layers", []):
        obj = getattr(getattr(layer, "impl", None), "obj", layer)  # engine record or pycaffe
        dataset = getattr(obj, "dataset", None)
        if isinstance(dataset, SegDataset):
            return -(-len(dataset) // dataset.batch_size)
    return default


def seg_test(net: Any, test_heads: list[Head], n_iter: int, loss: list[tuple[str, float]],
             progress: bool = True) -> dict[str, dict]:
    """Score the test net over its val split (`n_iter` passes when the size is unknown, see
    val_passes); confusion-histogram metrics per head.

    Each head's result: pixel_acc, mean_acc, mean_iu, fw_iu, per_class_iu, per_class_acc,
    n_pixels, loss (mean per pass of the net's objective), hist (the confusion histogram)
    and out_of_range (label pixels outside 0..n-1 and not void 255, which are not scored).
    """
    hists: dict[Head, np.ndarray] = {}
    unscored: dict[Head, int] = {}  # labels outside 0..n-1 and not void: fast_hist skips them
    total = 0.0
    passes, done = n_iter, 0
    with progress_bar(total=n_iter, desc="test", unit="batch", leave=False,
                      disable=not progress) as bar:
        while done < passes:
            net.forward()
            if done == 0:  # data layers set themselves up in the first forward
                passes = val_passes(net, n_iter)
                bar.reset(total=passes)
            done += 1
            bar.update(1)
            total += sum(w * float(np.sum(net.blobs[top].data)) for top, w in loss)
            for head in test_heads:
                score = net.blobs[head.score].data
                n = score.shape[1]
                if head not in hists:
                    hists[head] = np.zeros((n, n), dtype=np.int64)
                label = net.blobs[head.label].data
                hists[head] += fast_hist(label, score.argmax(1)[:, None], n)
                unscored[head] = unscored.get(head, 0) + int(out_of_range(label, n).sum())
    out = {}
    for head, hist in hists.items():
        m = metrics(hist)
        m["loss"] = total / max(done, 1)
        m["hist"], m["out_of_range"] = hist, unscored[head]
        out[head.score] = m
    return out


def scores_record(base: dict, head: str, m: dict) -> dict:
    return {**base, "phase": "test", "head": head, "loss": _finite(m["loss"]),
            **{k: _finite(m[k]) for k in SCORE_KEYS},
            "per_class_iu": _finite(m["per_class_iu"]), "n_pixels": m["n_pixels"]}
