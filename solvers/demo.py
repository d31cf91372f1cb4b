"""The demo `python solve.py` runs: the whole FCN workflow on synthetic data, on a CPU, in minutes.

1. Synthetic shapes in VOC layout (solvers.data.synthetic) -> <out>/data.
2. Width-scaled FCN-32s/16s/8s folders from netgen's synthetic preset -> <out>/models, in
   netgen's "scratch" recipe (MSRA trunk, loss normalised over valid pixels, no dropout, a fixed
   input scale, Adam; the reference recipe assumes ImageNet weights and an unnormalised loss,
   which cannot start from zero), their data layers reading the VOC-layout folder.
3. 32s -> 16s -> 8s staged training (solvers.stages), snapshots and metrics.jsonl per stage.
4. Mean IU per stage against the background-only baseline, and prediction overlays of val
   images -> <out>/overlays; a summary in <out>/summary.json.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Iterator, Sequence

import numpy as np

from netgen.errors import FcnkitError
from netgen.fileio import atomic_write, write_text_atomic

from .data.base import VOC_MEAN
from .data.readers import read_index_png, read_rgb
from .demo_plan import duration, estimate_seconds, plan_text
from .demo_state import DemoRun, open_run, train_stages
from .score import fast_hist, metrics
from .stages import SOLVER_FILE
from .train import TrainResult

STAGES = ("32s", "16s", "8s")
RECIPE = "scratch"  # netgen's from-scratch training recipe
DATA_DIR = "../../data"  # the VOC-layout folder, as the model folders see it


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and recipe of the demo; the defaults learn clearly in a few minutes on 2 cores."""

    train: int = 300          # synthetic training images
    val: int = 50             # validation images
    size: int = 128           # image side, pixels (at 64 a stride-32 net sees a 2x2 grid)
    classes: int = 5          # object classes (plus background)
    width: float = 1 / 16     # VGG16 channel multiplier (conv1 4 ... fc6/fc7 256 channels)
    iters: tuple[int, ...] = (1500, 750, 750)  # per stage 32s, 16s, 8s
    base_lr: tuple[float, ...] = (1e-3, 1e-3, 1e-3)  # Adam rates per stage
    test_every: int = 250     # val scoring interval (and at the end of each stage)
    batch: int = 1
    overlays: int = 8         # val images rendered with predictions
    input_scale: float = 1 / 64  # mean-subtracted pixels to roughly unit scale (a Scale layer)
    seed: int = 0
    threads: int = 1          # torch CPU threads: nets this small run fastest on one
    amp: str | None = None    # "bf16" / "fp16": mixed precision on the torch backend

    def check(self) -> None:
        if self.train < 1 or self.val < 1:
            raise FcnkitError(f"demo needs at least one training and one val image, got "
                              f"{self.train} and {self.val}")
        if self.size < 16:
            raise FcnkitError(f"demo image size must be >= 16 pixels, got {self.size}")
        if self.threads < 1:
            raise FcnkitError(f"demo threads must be >= 1, got {self.threads}")
        if self.amp not in (None, "bf16", "fp16"):
            raise FcnkitError(f"demo amp must be bf16 or fp16, got {self.amp!r}")


def solver_values(config: DemoConfig, iters: int, base_lr: float) -> dict:
    """Per-stage solver fields on top of the recipe: rate, length, a snapshot at the end,
    test_iter covering the val images, the seed."""
    n = max(iters, 1)
    return dict(base_lr=base_lr, max_iter=n, snapshot=n, test_iter=config.val,
                random_seed=config.seed)


def make_models(out: Path, config: DemoConfig, iters: Sequence[int],
                base_lr: Sequence[float]) -> list[Path]:
    """netgen's synthetic FCN-32s/16s/8s in the scratch recipe, reading the VOC-layout data
    beside `out`; returns the solver files. Each file's header holds the netgen command."""
    from netgen.writer import generate

    data = {"seed": config.seed}
    return [generate(f"synthetic-fcn{stage}", out, config.classes + 1, config.width,
                     recipe=RECIPE, input_scale=config.input_scale,
                     input_size=(config.size, config.size), voc_dir=DATA_DIR,
                     train_params={**data, "batch_size": config.batch},
                     val_params={**data, "batch_size": 1},
                     solver=solver_values(config, n, lr)) / SOLVER_FILE
            for stage, n, lr in zip(STAGES, iters, base_lr)]


def val_items(data: Path) -> list[str]:
    return (data / "ImageSets" / "Segmentation" / "val.txt").read_text().split()


def background_baseline(data: Path, n_classes: int) -> dict:
    """Scores of predicting background (0) everywhere on the val split."""
    hist = np.zeros((n_classes, n_classes), dtype=np.int64)
    for name in val_items(data):
        label = read_index_png(data / "SegmentationClass" / f"{name}.png")
        hist += fast_hist(label, np.zeros_like(label), n_classes)
    return metrics(hist)


def write_overlays(data: Path, out: Path, deploy: Path, weights: Path, backend: str,
                   gpu: int | None, count: int, names: Sequence[str]) -> list[Path]:
    """Predictions of the first `count` val images: label PNGs, overlays with a legend, and
    image | ground truth | prediction panels (<name>_compare.png), which are returned."""
    from .palette import comparison
    from .predict import Predictor, save_prediction

    predictor = Predictor(deploy, weights, "caffe" if backend == "caffe" else "torch", gpu)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name in val_items(data)[:count]:
        rgb = read_rgb(data / "JPEGImages" / f"{name}.jpg")
        labels = predictor.labels(rgb, VOC_MEAN)
        save_prediction(out, name, rgb, labels, list(names))
        truth = read_index_png(data / "SegmentationClass" / f"{name}.png")
        panel = out / f"{name}_compare.png"
        with atomic_write(panel, "wb") as f:
            comparison(rgb, truth, labels, list(names)).save(f, format="PNG")
        files.append(panel)
    return files


def _table(rows: list[tuple[str, str, str, float, float]]) -> str:
    lines = [f"{'':<22}{'iters':>7}{'time':>9}{'mean IU':>9}{'pixel acc':>11}"]
    lines += [f"{name:<22}{iters:>7}{secs:>9}{100 * iu:>9.2f}{100 * acc:>11.2f}"
              for name, iters, secs, iu, acc in rows]
    return "\n".join(lines)


def run_demo(out: Path, config: DemoConfig | None = DemoConfig(), *, backend: str = "auto",
             gpu: int | None = None, iters: Sequence[int] | None = None,
             test_every: int | None = None, progress: bool = True, mode: str = "auto",
             changes: dict | None = None) -> dict:
    """Run the demo into `out`; returns (and writes to summary.json) the figures it prints.

    mode: what to do with a run already in `out` (solvers.demo_state.open_run): "auto" reuses
    one with the same settings, "fresh" clears it, "resume" continues it; config None with
    "resume" takes the settings (config, iters, test interval, backend) recorded there, with
    `changes` (DemoConfig fields) and any iters / test_every given on top.
    """
    from .backends import resolve

    if config is None:
        record = DemoRun.load(Path(out)) if mode == "resume" else None
        if record is None:
            raise FcnkitError(f"--resume: {out} holds no demo run to continue; run without "
                              "--resume to start one")
        config, recorded_iters, recorded_every, backend = recorded(record.settings)
        config = replace(config, **(changes or {}))
        iters = recorded_iters if iters is None else iters
        test_every = recorded_every if test_every is None else test_every
    config.check()
    counts = list(config.iters) if iters is None else list(iters)
    if len(counts) == 1:
        counts *= len(STAGES)
    if len(counts) != len(STAGES):
        raise FcnkitError(f"--iters: the demo has {len(STAGES)} stages; give one count or "
                          f"{len(STAGES)}")
    module = resolve(backend)
    test_every = config.test_every if test_every is None else test_every
    run = open_run(Path(out), settings(config, counts, test_every, module.NAME), mode)
    with torch_threads(config.threads):
        return _run(run, config, module, gpu, counts, test_every, progress)


def settings(config: DemoConfig, counts: Sequence[int], test_every: int, backend: str) -> dict:
    """What makes two demo runs the same run (recorded in <out>/run.json)."""
    return {"config": asdict(config), "iters": list(counts), "test_every": test_every,
            "backend": backend}


def recorded(values: dict) -> tuple[DemoConfig, list[int], int, str]:
    """(config, iters, test_every, backend) back from settings() as read from JSON."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in values["config"].items()}
    return DemoConfig(**fields), values["iters"], values["test_every"], values["backend"]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with n torch CPU threads (tiny nets run fastest on one), then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _say_estimate(module: ModuleType, solvers: list[Path], counts: list[int],
                  done: list[str], test_every: int, config: DemoConfig, gpu: int | None) -> None:
    seconds, rate, stage = estimate_seconds(module, solvers, counts, STAGES, done, test_every,
                                            config.val, gpu)
    if seconds:
        print(f"estimated training time {duration(seconds)} (measured here: "
              f"{1000 * rate:.0f} ms per FCN-{stage} iteration); Ctrl-C stops with a snapshot and "
              "prints the command that continues", flush=True)


def _run(run: DemoRun, config: DemoConfig, module: ModuleType, gpu: int | None,
         counts: list[int], test_every: int, progress: bool) -> dict:
    from .data.classes import class_names
    from .data.synthetic import make_synthetic_voc
    from .figures import demo_figures

    start = time.perf_counter()
    out = run.out
    print(plan_text(config, counts, test_every, module.NAME, out, list(run.stages)), flush=True)
    data = out / "data"
    if not run.data:
        make_synthetic_voc(data, config.train, config.val, (config.size, config.size),
                           config.classes, config.seed)
        run.data = True
        run.save()
    solvers = make_models(out / "models", config, counts, config.base_lr)
    if progress:  # measured rates; --quiet skips the few seconds this takes
        _say_estimate(module, solvers, counts, list(run.stages), test_every, config, gpu)
    n_classes = config.classes + 1
    baseline = background_baseline(data, n_classes)
    results: list[TrainResult] = train_stages(
        run, STAGES, solvers, counts, [f"fcn{s}" for s in STAGES], backend=module.NAME,
        gpu=gpu, progress=progress, test_every=test_every, amp=config.amp)
    names = class_names("synthetic", n_classes)
    overlays = write_overlays(data, out / "overlays", solvers[-1].parent / "deploy.prototxt",
                              results[-1].weights, module.NAME, gpu, config.overlays, names)
    figures = demo_figures(out, data, solvers[-1].parent / "deploy.prototxt", results[-1].weights,
                           module.NAME, gpu, names, (config.size, config.size))
    rows = [("background only", "", "", baseline["mean_iu"], baseline["pixel_acc"])]
    rows += [(f"FCN-{s}", str(r.iter), f"{r.seconds:.0f} s", r.mean_iu,
              next(iter(r.scores.values()))["pixel_acc"] if r.scores else float("nan"))
             for s, r in zip(STAGES, results)]
    summary = {
        "config": asdict(config), "backend": module.NAME, "seconds": time.perf_counter() - start,
        "baseline_mean_iu": baseline["mean_iu"],
        "stages": [{"stage": s, "iter": r.iter, "seconds": r.seconds, "mean_iu": r.mean_iu,
                    "weights": str(r.weights), "metrics": str(r.metrics_path)}
                   for s, r in zip(STAGES, results)],
        "overlays": [str(p) for p in overlays],
        "figures": [str(p) for p in figures],
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nfcnkit demo ({module.NAME} backend, {summary['seconds']:.0f} s) on {config.val} "
          f"synthetic val images, {n_classes} classes:")
    print(_table(rows))
    print(f"snapshots and metrics.jsonl: {out / 'models'}/*/snapshot; overlays: {out / 'overlays'}"
          f"; curves, confusion matrix, net graph: {out / 'plots'}")
    return summary
