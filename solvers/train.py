"""The training loop both backends share: the reference FCN solve.py, made a library function.

    train("models/voc-fcn32s/solver.prototxt", weights="VGG_ILSVRC_16_layers.caffemodel")

Initial weights go in as solvers/init_weights.py says (transplant of a classifier, bilinear
upsampling). Then the solver steps with a progress bar, the
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

from . import backends
from .engine.lr_policy import learning_rate
from .init_weights import init_weights
from .plot import METRICS_FILE
from .data.labels import check_net_labels, score_warnings, warn
from .learnable import FlatLossWatch, check_learnable
from .progress import bar as progress_bar
from .seg_test import scores_record, seg_test
from .solver_files import SolverFiles, heads, loss_tops, read_solver_files

_ROOT = str(Path(__file__).resolve().parent.parent)  # the folder holding the `solvers` package


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


class MetricsLog:
    """JSON lines, one record per event; the file is rewritten whole (atomically) each time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text().splitlines() if path.is_file() else []

    def write(self, record: dict) -> None:
        self.lines.append(json.dumps(record, sort_keys=False))
        write_text_atomic(self.path, "\n".join(self.lines) + "\n")

    def keep_until(self, it: int | None) -> None:
        """Forget the records of other runs (from the next write on): all of them for a run
        from scratch (it None), those past iteration `it` for a resume from there (they were
        logged by a run that stopped without a snapshot after them)."""
        self.lines = [] if it is None else [
            line for line in self.lines if json.loads(line).get("iter", 0) <= it]


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
          stage: str | None = None, progress: bool = True,
          amp: str | None = None, allow_zero_init: bool = False) -> TrainResult:
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
    amp: "bf16" / "fp16" autocast (torch backend only; losses and updates stay float32).
    allow_zero_init: train even when every learnable parameter starts at zero in series (by
      default an FcnkitError before iteration 1, see solvers.learnable: such a net cannot learn).

    Under torchrun (torch backend) every process trains on its share of the data with
    gradients combined as Caffe's multi-GPU solver does; rank 0 alone tests, logs and snapshots.
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
    with _snapshot_folder(files.snapshot_prefix.parent), run_in(files.path.parent):
        return _train(files, module, weights_path, resume_path, gpu, iters, test_every,
                      MetricsLog(log_file), stage, progress, amp, allow_zero_init)


@contextlib.contextmanager
def _snapshot_folder(folder: Path) -> Iterator[None]:
    """Create the snapshot folder up front (an unwritable place fails before any work), and
    remove it again, with the parents made for it, when the run fails leaving it empty (a wrong
    data path must not leave an empty snapshot/ behind)."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FcnkitError(f"cannot create snapshot folder {folder}: {e.strerror}") from None
    try:
        yield
    except BaseException:
        for p in made:  # deepest first; rmdir only succeeds on an empty folder
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


@contextlib.contextmanager
def _snapshot_on_interrupt(solver: Any, root: bool) -> Iterator[None]:
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
            if root:
                tqdm.write(f"interrupted at iteration {solver.iter}: writing a snapshot to "
                           "resume from")
                solver.snapshot()
            raise


def _train(files: SolverFiles, module: ModuleType, weights: Path | None, resume: Path | None,
           gpu: int | None, iters: int | None, test_every: int | None, log: MetricsLog,
           stage: str | None, progress: bool, amp: str | None,
           allow_zero_init: bool) -> TrainResult:
    param = files.param
    start_time = time.perf_counter()
    solver = module.make_solver(files.path, gpu, amp)
    root = getattr(solver, "rank", 0) == 0  # data-parallel runs: rank 0 tests, logs, snapshots
    progress = progress and root
    if resume is not None:
        solver.restore(str(resume))
        _skip_trained_data(solver.net, int(solver.iter) * param.iter_size)
    else:
        init_weights(solver.net, module, weights, files)
        if not allow_zero_init:
            check_learnable(solver.net, files.train_net, str(files.path),
                            weights and str(weights))
    for message in check_net_labels(solver.net, files.train_net, str(files.path)):
        if root:
            warn(message)
    start = int(solver.iter)
    log.keep_until(start if resume is not None else None)
    todo = max(param.max_iter - start, 0) if iters is None else iters
    end = start + todo
    test_heads = heads(files.test_net) if files.test_net is not None else []
    testing = test_every != 0 and bool(test_heads) and root
    period = param.snapshot if test_every is None else test_every  # 0: only at the end
    test_net = module.test_net(solver) if testing else None
    train_loss = loss_tops(files.train_net)
    test_loss = loss_tops(files.test_net) if files.test_net is not None else []
    base = {"stage": stage} if stage else {}
    scores: dict[str, dict] = {}

    def elapsed() -> float:
        return round(time.perf_counter() - start_time, 3)

    def snapshotted(it: int) -> bool:
        """Whether the solver itself wrote a snapshot at iteration `it` (its interval)."""
        return bool(param.snapshot) and it > start and it % param.snapshot == 0

    tested = False

    def run_test(it: int) -> None:
        nonlocal scores, tested
        try:
            scores = seg_test(test_net, test_heads, param.test_iter[0], test_loss, progress)
        except FcnkitError:  # a bad val file must not cost the training done so far
            if root and not snapshotted(it):
                solver.snapshot()
            raise
        for head, m in scores.items():
            if not tested:  # the val ground truth is the same at every test: say it once
                for message in score_warnings(m["hist"], f"{files.test_net.name or 'val'} "
                                              f"net, head {head!r}", m["out_of_range"]):
                    warn(message)
            write({**scores_record(base, head, m), "iter": it, "elapsed_s": elapsed()})
            tqdm.write(f"[{stage or files.path.parent.name}] iter {it} {head}: "
                       f"mean IU {100 * m['mean_iu']:.2f}  pixel acc {100 * m['pixel_acc']:.2f}"
                       f"  mean acc {100 * m['mean_acc']:.2f}  fw IU {100 * m['fw_iu']:.2f}")
        tested = True

    seed_iteration = getattr(module, "seed_iteration", None)
    write = log.write if root else (lambda record: None)
    write({**base, "phase": "start", "iter": start, "backend": module.NAME,
               "from": str(resume or weights or "scratch"), "elapsed_s": elapsed()})
    recent: deque[float] = deque(maxlen=max(param.average_loss, 10))
    flat_loss = FlatLossWatch(files.train_net, str(files.path))
    step_state = sum(1 for v in param.stepvalue if v < start)  # multistep's position
    bar = progress_bar(total=todo, desc=stage or files.path.parent.name, unit="it",
                       disable=not progress, dynamic_ncols=True)
    with bar, _snapshot_on_interrupt(solver, root):
        for it in range(start, end):
            rate, step_state = learning_rate(param, it, step_state)
            if seed_iteration is not None:
                seed_iteration(solver, it)
            solver.step(1)
            if getattr(solver, "requested_early_exit", False):
                raise KeyboardInterrupt
            flat_loss.update(solver.net)
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
                write({**base, "phase": "train", "iter": done, "loss": loss, "lr": rate,
                           "elapsed_s": elapsed()})
            if testing and period and done % period == 0 and done != end:
                run_test(done)
    if root and not snapshotted(end):
        solver.snapshot()  # before the final test, which may fail on a bad val file
    if testing:
        run_test(end)
    return TrainResult(module.NAME, end, files.weights_file(end), files.state_file(end),
                       log.path, scores, elapsed())


def _skip_trained_data(net: Any, batches: int) -> None:
    """After a restore, move fcnkit's data layers of the train net past the batches the
    resumed run already trained on (each forward takes one; iter x iter_size of them), so the
    run goes on with the items and augmentation an uninterrupted run would see next. Engine
    nets hold the layer object at rec.impl.obj; pycaffe's net.layers are the objects."""
    from .data.layers import SegDataLayer

    for rec in net.layers:
        obj = getattr(getattr(rec, "impl", None), "obj", rec)
        if isinstance(obj, SegDataLayer):
            obj.skip_batches(batches)
