"""The training loop both backends share: the reference FCN solve.py, made a library function.

    train("models/voc-fcn32s/solver.prototxt", weights="VGG_ILSVRC_16_layers.caffemodel")

Initial weights are copied in by layer name; an ImageNet classifier (fully connected fc6/fc7)
is first made fully convolutional by surgery's transplant. Upsampling Deconvolution layers the
weights did not provide get bilinear kernels. Then the solver steps with a progress bar, the
val net is scored every `test_every` iterations (confusion-histogram metrics of every
SoftmaxWithLoss head), metrics go to `metrics.jsonl` beside the snapshots, and the weights are
snapshotted at the solver's interval and at the end.

As in Caffe, where the reference recipes are run from inside the model folder, every relative
path (nets, snapshot_prefix, data folders in param_str) is taken from the solver's folder:
the run happens there.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from netgen.errors import FcnkitError
from netgen.fileio import write_text_atomic
from netgen.proto import caffe_pb2
from surgery.caffemodel import Weights, load_weights
from surgery.legacy import upgrade_net

from . import backends
from .engine.lr_policy import learning_rate
from .engine.state import filter_net, make_state
from .score import fast_hist, metrics

_ROOT = str(Path(__file__).resolve().parent.parent)  # the folder holding the `solvers` package
METRICS_FILE = "metrics.jsonl"
SCORE_KEYS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


@dataclass(frozen=True)
class Head:
    """One scored output: the score blob and the label blob its SoftmaxWithLoss compares."""

    score: str
    label: str


@dataclass(frozen=True)
class SolverFiles:
    """What a solver prototxt points to, resolved against its folder."""

    path: Path
    param: caffe_pb2.SolverParameter
    train_net: caffe_pb2.NetParameter  # layers of the TRAIN phase
    test_net: caffe_pb2.NetParameter | None  # layers of the TEST phase, None without a test net
    snapshot_prefix: Path

    @property
    def hdf5(self) -> bool:
        return self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5

    def weights_file(self, it: int) -> Path:
        """Caffe's snapshot name for the weights at iteration `it`."""
        return Path(f"{self.snapshot_prefix}_iter_{it}.caffemodel" + (".h5" if self.hdf5 else ""))

    def state_file(self, it: int) -> Path:
        return Path(f"{self.snapshot_prefix}_iter_{it}.solverstate" + (".h5" if self.hdf5 else ""))


@dataclass
class TrainResult:
    """Where a run ended: iteration, final snapshot, metrics log, last test scores per head."""

    backend: str
    iter: int
    weights: Path
    state: Path
    metrics_path: Path
    scores: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def mean_iu(self) -> float:
        """Mean IU of the first head at the last test (NaN if no test ran)."""
        first = next(iter(self.scores.values()), None)
        return float(first["mean_iu"]) if first else float("nan")


# ---------------------------------------------------------------------------------- reading

def _filtered(spec: Any) -> caffe_pb2.NetParameter:
    """The layers a solver's net keeps in its NetState, in the current format."""
    return filter_net(upgrade_net(spec.param), make_state(spec.phase, spec.level, spec.stages))


def read_solver_files(solver_path: str | os.PathLike) -> SolverFiles:
    """Read a solver prototxt and the nets it names, with Caffe's rules (engine's solver setup:
    train/test net one-of rules, NetState merging, snapshot_prefix upgrade)."""
    from .engine.solver_setup import load_solver

    path = Path(solver_path).resolve()
    setup = load_solver(path)
    test_net = _filtered(setup.tests[0]) if setup.tests else None
    return SolverFiles(path, setup.param, _filtered(setup.train), test_net,
                       Path(setup.snapshot_prefix))


def loss_tops(net: caffe_pb2.NetParameter) -> list[tuple[str, float]]:
    """(top, loss_weight) of every top that adds to the objective (Caffe's default weights)."""
    out = []
    for layer in net.layer:
        weights = list(layer.loss_weight) or [1.0 if layer.type.endswith("Loss") and i == 0
                                              else 0.0 for i in range(len(layer.top))]
        out += [(top, w) for top, w in zip(layer.top, weights) if w]
    return out


def heads(net: caffe_pb2.NetParameter) -> list[Head]:
    """The (score, label) pair of every SoftmaxWithLoss layer: what a segmentation test scores."""
    return [Head(layer.bottom[0], layer.bottom[1]) for layer in net.layer
            if layer.type == "SoftmaxWithLoss" and len(layer.bottom) >= 2]


def deconvolutions(net: caffe_pb2.NetParameter) -> list[str]:
    """Names of the Deconvolution (upsampling) layers."""
    return [layer.name for layer in net.layer if layer.type == "Deconvolution"]


# ---------------------------------------------------------------------------------- weights

def _is_classifier(source: Weights, net: caffe_pb2.NetParameter) -> bool:
    """True when the file's fully connected layers are convolutions in `net` (fc6/fc7)."""
    convs = {layer.name for layer in net.layer if layer.type == "Convolution"}
    return any(source.types.get(name) == "InnerProduct" and name in convs for name in source)


def _check_fits(net: Any, source: Weights, where: Path) -> None:
    """Caffe aborts the process on a blob count or shape mismatch; report it as an error."""
    for name, arrays in source.items():
        if name not in net.params:
            continue
        target = net.params[name]
        if len(arrays) != len(target):
            raise FcnkitError(f"{where}: layer {name!r} has {len(arrays)} blobs, the net "
                              f"expects {len(target)}")
        for i, (array, blob) in enumerate(zip(arrays, target)):
            want = tuple(blob.data.shape)
            legacy = (name, i) in source.legacy and array.size == int(np.prod(want))
            if tuple(array.shape) != want and not legacy:
                raise FcnkitError(
                    f"{where}: cannot copy layer {name!r} param {i}: shape "
                    f"{'x'.join(map(str, array.shape))} in the file, "
                    f"{'x'.join(map(str, want))} in the net (rename the layer to learn it "
                    "from scratch)")


def _data_channels(net: Any, definition: caffe_pb2.NetParameter) -> dict[str, int]:
    """Channels of the tops of layers without bottoms (data layers), read off the built net."""
    return {top: int(net.blobs[top].data.shape[1]) for layer in definition.layer
            if not layer.bottom for top in layer.top
            if top in net.blobs and net.blobs[top].data.ndim >= 2}


def fcn_weights(weights: Path, files: SolverFiles, net: Any) -> tuple[Path, Weights]:
    """The file to copy into the train net: `weights` itself, or, for an ImageNet classifier,
    the layers surgery's transplant takes from it (fc made convolutional), written beside the
    snapshots. Layers the classifier lacks keep the net's own initialisation."""
    source = load_weights(weights)
    if not _is_classifier(source, files.train_net):
        return weights, source
    from surgery.caffemodel import save_weights
    from surgery.transplant import transplant

    converted, report = transplant(files.train_net, source,
                                   input_channels=_data_channels(net, files.train_net) or 3)
    taken = {e.layer for e in report if e.action in ("copied", "coerced")}
    kept = Weights(((name, arrays) for name, arrays in converted.items() if name in taken),
                   types=converted.types)
    out = files.snapshot_prefix.parent / f"{weights.name.split('.')[0]}-fcn.caffemodel"
    save_weights(out, kept, net=files.train_net)
    tqdm.write(f"transplanted {weights.name} -> {out}: {report.summary()}")
    return out, kept


def set_bilinear(net: Any, module: ModuleType, definition: caffe_pb2.NetParameter,
                 names: list[str]) -> None:
    """Give the named Deconvolution layers bilinear upsampling kernels, in place."""
    from surgery.interp import bilinear_weights

    groups = {layer.name: layer.convolution_param.group for layer in definition.layer}
    for name in names:
        blob = net.params[name][0]
        module.set_data(blob, bilinear_weights(tuple(blob.data.shape), groups[name], name))


def init_weights(net: Any, module: ModuleType, weights: Path | None,
                 files: SolverFiles) -> list[str]:
    """Copy `weights` into the train net, then give bilinear kernels to the upsampling layers
    the weights did not provide. Returns the layers set bilinear."""
    loaded: set[str] = set()
    if weights is not None:
        path, source = fcn_weights(weights, files, net)
        _check_fits(net, source, path)
        net.copy_from(str(path))
        loaded = set(source) & set(net.params)
    fresh = [name for name in deconvolutions(files.train_net)
             if name in net.params and name not in loaded]
    set_bilinear(net, module, files.train_net, fresh)
    return fresh


# ---------------------------------------------------------------------------------- testing

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


class MetricsLog:
    """JSON lines, one record per event; the file is rewritten whole (atomically) each time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text().splitlines() if path.is_file() else []

    def write(self, record: dict) -> None:
        self.lines.append(json.dumps(record, sort_keys=False))
        write_text_atomic(self.path, "\n".join(self.lines) + "\n")


def _test_record(base: dict, head: str, m: dict) -> dict:
    return {**base, "phase": "test", "head": head, "loss": _finite(m["loss"]),
            **{k: _finite(m[k]) for k in SCORE_KEYS},
            "per_class_iu": _finite(m["per_class_iu"]), "n_pixels": m["n_pixels"]}


# ---------------------------------------------------------------------------------- running

@contextlib.contextmanager
def run_in(folder: Path) -> Iterator[None]:
    """Work from `folder` (Caffe resolves relative paths against the working folder), keeping
    the fcnkit packages importable for Python layers."""
    if _ROOT not in sys.path:
        sys.path.append(_ROOT)
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _existing(path: str | os.PathLike | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FcnkitError(f"{what} {path}: no such file")
    return p


def _count(value: int | None, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise FcnkitError(f"{what} must be a whole number >= 0, got {value!r}")
    return value


def train(solver_path: str | os.PathLike, *, backend: str = "auto",
          weights: str | os.PathLike | None = None, gpu: int | None = None,
          iters: int | None = None, test_every: int | None = None,
          resume: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
          stage: str | None = None, progress: bool = True) -> TrainResult:
    """Train the solver's net; return where it ended.

    backend: "caffe" (pycaffe), "torch" (fcnkit's engine) or "auto" (pycaffe if it imports).
    weights: initial .caffemodel / .caffemodel.h5 (an ImageNet classifier is transplanted).
    gpu: GPU index; None trains on the CPU.
    iters: iterations to run now (default: up to the solver's max_iter).
    test_every: score the test net every N iterations (default: at the solver's snapshot
      interval) and at the end; 0 turns testing off.
    resume: a .solverstate to continue from (weights and bilinear init are then skipped).
    log_path: metrics JSON lines (default: metrics.jsonl beside the snapshots).
    stage: label written into every metrics record (multi-stage training).
    """
    files = read_solver_files(solver_path)
    weights_path = _existing(weights, "weights")
    resume_path = _existing(resume, "solver state")
    if weights_path is not None and resume_path is not None:
        raise FcnkitError("give initial weights or a solver state to resume from, not both")
    _count(iters, "iters")
    _count(test_every, "test_every")
    if gpu is not None and _count(gpu, "gpu") is None:
        raise FcnkitError(f"gpu must be a GPU index >= 0, got {gpu!r}")
    module = backends.resolve(backend)
    module.check_gpu(gpu)
    log_file = Path(log_path).resolve() if log_path else files.snapshot_prefix.parent / METRICS_FILE
    try:
        files.snapshot_prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FcnkitError(f"cannot create snapshot folder {files.snapshot_prefix.parent}: "
                          f"{e.strerror}") from None
    with run_in(files.path.parent):
        return _train(files, module, weights_path, resume_path, gpu, iters, test_every,
                      MetricsLog(log_file), stage, progress)


@contextlib.contextmanager
def _snapshot_on_interrupt(solver: Any) -> Iterator[None]:
    """Ctrl-C stops training with a snapshot to resume from (Caffe's SIGINT "stop" effect).

    The engine turns the signal into a request honoured between iterations (so the weights
    are never half-updated); pycaffe returns to Python between steps, where it arrives as
    KeyboardInterrupt.
    """
    signals = getattr(solver, "handling_signals", None)
    with signals() if signals else contextlib.nullcontext():
        try:
            yield
        except KeyboardInterrupt:
            tqdm.write(f"interrupted at iteration {solver.iter}: writing a snapshot to resume "
                       "from")
            solver.snapshot()
            raise


def _train(files: SolverFiles, module: ModuleType, weights: Path | None, resume: Path | None,
           gpu: int | None, iters: int | None, test_every: int | None, log: MetricsLog,
           stage: str | None, progress: bool) -> TrainResult:
    param = files.param
    start_time = time.perf_counter()
    solver = module.make_solver(files.path, gpu)
    if resume is not None:
        solver.restore(str(resume))
    else:
        init_weights(solver.net, module, weights, files)
    start = int(solver.iter)
    todo = max(param.max_iter - start, 0) if iters is None else iters
    end = start + todo
    test_heads = heads(files.test_net) if files.test_net is not None else []
    testing = test_every != 0 and bool(test_heads)
    period = param.snapshot if test_every is None else test_every  # 0: only at the end
    test_net = module.test_net(solver) if testing else None
    train_loss = loss_tops(files.train_net)
    test_loss = loss_tops(files.test_net) if files.test_net is not None else []
    base = {"stage": stage} if stage else {}
    scores: dict[str, dict] = {}

    def elapsed() -> float:
        return round(time.perf_counter() - start_time, 3)

    def run_test(it: int) -> None:
        nonlocal scores
        scores = seg_test(test_net, test_heads, param.test_iter[0], test_loss, progress)
        for head, m in scores.items():
            log.write({**_test_record(base, head, m), "iter": it, "elapsed_s": elapsed()})
            tqdm.write(f"[{stage or files.path.parent.name}] iter {it} {head}: "
                       f"mean IU {100 * m['mean_iu']:.2f}  pixel acc {100 * m['pixel_acc']:.2f}"
                       f"  mean acc {100 * m['mean_acc']:.2f}  fw IU {100 * m['fw_iu']:.2f}")

    log.write({**base, "phase": "start", "iter": start, "backend": module.NAME,
               "from": str(resume or weights or "scratch"), "elapsed_s": elapsed()})
    recent: deque[float] = deque(maxlen=max(param.average_loss, 10))
    step_state = sum(1 for v in param.stepvalue if v < start)  # multistep's position
    bar = tqdm(total=todo, desc=stage or files.path.parent.name, unit="it",
               disable=not progress, dynamic_ncols=True)
    with bar, _snapshot_on_interrupt(solver):
        for it in range(start, end):
            rate, step_state = learning_rate(param, it, step_state)
            solver.step(1)
            if getattr(solver, "requested_early_exit", False):
                raise KeyboardInterrupt
            recent.append(sum(w * float(np.sum(solver.net.blobs[top].data))
                              for top, w in train_loss))
            loss = float(np.mean(recent))
            if not math.isfinite(recent[-1]):
                raise FcnkitError(f"{files.path}: loss became {recent[-1]} at iteration "
                                  f"{it + 1}; lower base_lr or check the data")
            bar.set_postfix(loss=f"{loss:.4g}", lr=f"{rate:.3g}", refresh=False)
            bar.update(1)
            done = it + 1
            if done == end or (param.display and done % param.display == 0):
                log.write({**base, "phase": "train", "iter": done, "loss": loss, "lr": rate,
                           "elapsed_s": elapsed()})
            if testing and period and done % period == 0 and done != end:
                run_test(done)
    if testing:
        run_test(end)
    if not (param.snapshot and end > start and end % param.snapshot == 0):
        solver.snapshot()  # the solver itself snapshots at its interval
    return TrainResult(module.NAME, end, files.weights_file(end), files.state_file(end),
                       log.path, scores, elapsed())
