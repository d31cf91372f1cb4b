"""Shared helpers for the solve/infer tests: tiny synthetic data, tiny trainable FCN folders."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from solvers.demo import DemoConfig, make_models, torch_threads
from solvers.data.synthetic import make_synthetic_voc
from surgery.caffemodel import load_weights

ROOT = Path(__file__).resolve().parent.parent
TINY = DemoConfig(train=4, val=2, size=32, overlays=2)


def tiny_models(folder: Path, iters: Sequence[int] = (2, 2, 2), config: DemoConfig = TINY,
                ) -> list[Path]:
    """Synthetic VOC-layout data in folder/data and the demo's from-scratch FCN-32s/16s/8s
    (width 1/16, 32x32 images) in folder/models; returns the three solver files."""
    make_synthetic_voc(folder / "data", config.train, config.val, (config.size, config.size),
                       config.classes, config.seed)
    return make_models(folder / "models", config, iters, config.base_lr)


def one_thread():
    """Tiny nets run several times faster on one torch thread (and the suite runs in parallel)."""
    return torch_threads(1)


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run one of the repository's top-level scripts the way a user does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def weights(path: Path) -> dict[str, list[np.ndarray]]:
    return {k: [np.array(a) for a in v] for k, v in load_weights(path).items()}


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def random_fcn8s(folder: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """A width-1/16 FCN-8s deploy net (6 classes) in folder/models and folder/tiny.caffemodel:
    weights drawn from `rng` at He scale, bilinear upsampling, biases N(0, 0.1)."""
    from netgen.writer import generate
    from solvers.engine import Net
    from surgery.interp import bilinear_weights

    deploy = generate("synthetic-fcn8s", folder / "models", width=1 / 16) / "deploy.prototxt"
    net = Net(str(deploy), "TEST")
    for name, params in net.params.items():
        w = params[0]
        w.data = (bilinear_weights(w.shape, 1, name) if name.startswith("upscore") else
                  rng.normal(0, np.sqrt(2 / np.prod(w.shape[1:])), w.shape))
        for b in params[1:]:
            b.data = rng.normal(0, 0.1, b.shape)
    weights = folder / "tiny.caffemodel"
    net.save(weights)
    return deploy, weights


def tiny_vgg16_classifier(path: Path, classes: int = 10):
    """A width-1/16 VGG16 classifier with N(0, 0.1) weights saved at `path` in the legacy (V1)
    format, as the published VGG16 caffemodel is; returns the engine Net it was drawn in."""
    from solvers.engine import Net
    from surgery.caffemodel import save_weights
    from surgery.classifiers import vgg16

    definition = vgg16(classes, width=1 / 16, batch=1)
    classifier = Net(definition, "TEST")
    rng = np.random.default_rng(0)
    for params in classifier.params.values():
        for p in params:
            p.data = rng.normal(0, 0.1, p.shape)
    save_weights(path, classifier.to_weights(), net=definition, legacy=True)
    return classifier
