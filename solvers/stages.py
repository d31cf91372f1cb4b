"""Multi-stage FCN training: FCN-32s, then FCN-16s from its weights, then FCN-8s (the paper's
"staged" recipe). Each stage is a model folder named like the first with its own stride
(models/voc-fcn32s -> voc-fcn16s -> voc-fcn8s); a stage starts from the previous stage's
final weights through surgery's stage init: shared layers copied, new score layers zero,
new upsampling layers bilinear. The at-once net (voc-fcn8s-atonce) is a single stage.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from netgen.errors import FcnkitError

from .solver_files import read_solver_files
from .train import TrainResult, train

SOLVER_FILE = "solver.prototxt"
_STAGE = re.compile(r"^([1-9][0-9]*)s$")
_STAGED_NAME = re.compile(r"^(?P<stem>.*?)(?P<stride>[1-9][0-9]*s)$")
_STATE = re.compile(r"_iter_(\d+)\.solverstate(\.h5)?$")


def parse_stages(text: str) -> list[str]:
    """"32s,16s,8s" -> ["32s", "16s", "8s"]: strides as <n>s, each finer than the one before."""
    stages = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not _STAGE.match(s) for s in stages):
        raise FcnkitError(f"--stages {text!r}: give output strides coarse to fine, separated by "
                          "commas, e.g. 32s,16s,8s")
    strides = [int(s[:-1]) for s in stages]
    if any(b >= a for a, b in zip(strides, strides[1:])):
        raise FcnkitError(f"--stages {text!r}: each stage must have a finer stride than the one "
                          "before (e.g. 32s,16s,8s)")
    return stages


def solver_file(model: str | os.PathLike) -> Path:
    """The solver of a model folder (or the solver prototxt itself when given a file)."""
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / SOLVER_FILE
        if not path.is_file():
            raise FcnkitError(f"model folder {model} has no {SOLVER_FILE}")
    elif not path.is_file():
        raise FcnkitError(f"model {model}: no such folder or file")
    return path.resolve()


def stage_solvers(model: str | os.PathLike, stages: Sequence[str]) -> list[Path]:
    """The solver of each stage, from the model folder's name (voc-fcn32s -> voc-fcn16s ...).

    Every stage's folder must exist and its solver must read cleanly: a multi-stage run
    fails before writing anything rather than between stages.
    """
    folder = solver_file(model).parent
    found = _STAGED_NAME.match(folder.name)
    if not found:
        raise FcnkitError(
            f"--stages: cannot derive stage folders from {folder.name!r}; its name must end in "
            "the stride (like voc-fcn32s). An at-once net (…-atonce) trains in one stage: "
            "leave out --stages")
    solvers = []
    for stage in stages:
        candidate = folder.parent / f"{found['stem']}{stage}"
        if not (candidate / SOLVER_FILE).is_file():
            raise FcnkitError(f"--stages: stage {stage} needs {candidate / SOLVER_FILE}, "
                              "which does not exist (generate it with netgen)")
        solvers.append(candidate / SOLVER_FILE)
    for path in solvers:
        read_solver_files(path)
    return solvers


def latest_state(solver: Path) -> Path | None:
    """The solver's snapshot state (Caffe's <prefix>_iter_N.solverstate[.h5]) with the highest
    iteration N, None when there is none."""
    prefix = read_solver_files(solver).snapshot_prefix
    found = [(int(m[1]), p) for p in prefix.parent.glob(f"{prefix.name}_iter_*.solverstate*")
             if (m := _STATE.search(p.name)) and p.name[:m.start()] == prefix.name]
    return max(found)[1] if found else None


def iteration_of(state: Path) -> int:
    """N of a <prefix>_iter_N.solverstate[.h5] file."""
    found = _STATE.search(state.name)
    if found is None:
        raise FcnkitError(f"{state}: not a snapshot state name (<prefix>_iter_N.solverstate)")
    return int(found[1])


def stage_init(previous: Path, solver: Path, name: str) -> Path:
    """Write the next stage's initial weights (surgery's stage init from the previous stage's
    final weights) beside its snapshots; returns the file."""
    from surgery.caffemodel import load_weights, save_weights
    from surgery.stage import stage_init as init

    files = read_solver_files(solver)
    weights, report = init(load_weights(previous), files.train_net)
    out = files.snapshot_prefix.parent / f"init-from-{name}.caffemodel"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(out, weights, net=files.train_net)
    return out


def _per_stage(iters: int | Sequence[int] | None, n: int) -> list[int | None]:
    if iters is None or isinstance(iters, int):
        return [iters] * n
    iters = list(iters)
    if len(iters) != n:
        raise FcnkitError(f"--iters: give one count for all stages or one per stage ({n}), "
                          f"got {len(iters)}")
    return iters


def run_stages(solvers: Sequence[Path], *, weights: str | os.PathLike | None = None,
               iters: int | Sequence[int] | None = None, labels: Sequence[str] | None = None,
               **options) -> list[TrainResult]:
    """Train each stage in turn; the first from `weights`, each later one from the previous
    stage's final snapshot. `iters`: one count for every stage or one per stage; other
    options go to solvers.train.train."""
    counts = _per_stage(iters, len(solvers))
    names = list(labels) if labels else [solver.parent.name for solver in solvers]
    results: list[TrainResult] = []
    for k, (solver, n) in enumerate(zip(solvers, counts)):
        start = weights if k == 0 else stage_init(results[-1].weights, solver, names[k - 1])
        results.append(train(solver, weights=start, iters=n, stage=names[k], **options))
    return results
