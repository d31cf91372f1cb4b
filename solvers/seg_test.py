"""Segmentation test of a val net: confusion histograms of every SoftmaxWithLoss head over
`test_iter` forward passes, scored as the FCN paper reports (solvers.score), and the JSON
record a test writes to metrics.jsonl.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from tqdm import tqdm

from .score import fast_hist, metrics
from .solver_files import Head

SCORE_KEYS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


def _finite(x: Any) -> Any:
    """JSON has no NaN: undefined scores become null."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_finite(v) for v in x]
    x = float(x)
    return x if math.isfinite(x) else None


def seg_test(net: Any, test_heads: list[Head], n_iter: int, loss: list[tuple[str, float]],
             progress: bool = True) -> dict[str, dict]:
    """Run `n_iter` forward passes of the test net; confusion-histogram metrics per head.

    Each head's result: pixel_acc, mean_acc, mean_iu, fw_iu, per_class_iu, per_class_acc,
    n_pixels, and loss (mean per pass of the net's objective).
    """
    hists: dict[Head, np.ndarray] = {}
    total = 0.0
    for _ in tqdm(range(n_iter), desc="test", unit="batch", leave=False, disable=not progress):
        net.forward()
        total += sum(w * float(np.sum(net.blobs[top].data)) for top, w in loss)
        for head in test_heads:
            score = net.blobs[head.score].data
            n = score.shape[1]
            if head not in hists:
                hists[head] = np.zeros((n, n), dtype=np.int64)
            hists[head] += fast_hist(net.blobs[head.label].data, score.argmax(1)[:, None], n)
    out = {}
    for head, hist in hists.items():
        m = metrics(hist)
        m["loss"] = total / max(n_iter, 1)
        out[head.score] = m
    return out


def scores_record(base: dict, head: str, m: dict) -> dict:
    return {**base, "phase": "test", "head": head, "loss": _finite(m["loss"]),
            **{k: _finite(m[k]) for k in SCORE_KEYS},
            "per_class_iu": _finite(m["per_class_iu"]), "n_pixels": m["n_pixels"]}
