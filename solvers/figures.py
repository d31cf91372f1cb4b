"""The pictures a finished demo run leaves beside its numbers: training curves of all stages
(solvers.plot), the final net's confusion matrix over the whole val split with the scores as
JSON / CSV (solvers.score.write_scores), and the final net's graph (netgen.draw, when
graphviz's `dot` is installed).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from netgen.errors import FcnkitError

from .data.base import VOC_MEAN
from .data.readers import read_index_png, read_rgb
from .plot import PLOT_FILE
from .score import fast_hist, write_scores

PLOTS = "plots"  # the demo folder's figures (solvers.demo_state.OUTPUTS clears it)
GRAPH = "net.png"


def val_confusion(data: Path, names: Sequence[str], predict) -> np.ndarray:
    """Confusion histogram (n x n, true class down) of `predict(rgb) -> HxW labels` over
    every image of the VOC-layout folder's val split."""
    n = len(names)
    hist = np.zeros((n, n), dtype=np.int64)
    from .demo import val_items

    for name in tqdm(val_items(data), desc="val confusion", unit="img", disable=None,
                     leave=False):
        truth = read_index_png(data / "SegmentationClass" / f"{name}.png")
        hist += fast_hist(truth, predict(read_rgb(data / "JPEGImages" / f"{name}.jpg")), n)
    return hist


def demo_figures(out: Path, data: Path, deploy: Path, weights: Path, backend: str,
                 gpu: int | None, names: Sequence[str], size: tuple[int, int]) -> list[Path]:
    """Write training.png, confusion.png with scores.json / scores.csv, and net.png (deploy
    drawn at `size`, H x W) into out/plots; returns the files written. A figure that cannot
    be made is named in one line on stderr and the others are still written."""
    from .plot import plot_after_training
    from .predict import Predictor

    plots = out / PLOTS
    plots.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    curves = plot_after_training(out / "models", plots / PLOT_FILE, title="fcnkit demo: training")
    written += [curves] if curves else []
    predictor = Predictor(deploy, weights, "caffe" if backend == "caffe" else "torch", gpu)
    hist = val_confusion(data, names, lambda rgb: predictor.labels(rgb, VOC_MEAN))
    written += write_scores(plots, hist, names)
    if shutil.which("dot") is None:
        print("net graph not drawn: graphviz's `dot` is not installed "
              "(apt-get install graphviz)", file=sys.stderr)
        return written
    from netgen.draw import draw
    from netgen.schema import read_net

    try:
        written.append(draw(read_net(deploy), plots / GRAPH, size))
    except FcnkitError as e:
        print(f"net graph not drawn: {e}", file=sys.stderr)
    return written
