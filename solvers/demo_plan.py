"""What the demo is about to do, and about how long it will take, said before it starts.

The time is an estimate from rates measured on this machine just before training: each stage's
train net built by the backend (as training builds it, in the model folder) and timed over a
few forward + backward passes, a test pass counted as one forward per val image. Nothing is
written: the nets are thrown away, and solvers seed from the solver's random_seed when built,
so the run that follows is the same as without the estimate.
"""
from __future__ import annotations

import math
from fractions import Fraction
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from .solver_files import read_solver_files
from .stages import iteration_of, latest_state
from .train import run_in

PASSES = 2  # timed forward + backward passes per stage, after one untimed warm-up


def plan_text(config: Any, counts: Sequence[int], test_every: int, backend: str,
              out: Path, done: Sequence[str]) -> str:
    """One paragraph: data, nets, stages with their iterations, scoring, outputs."""
    stages = ", then ".join(f"FCN-{s} {n} iterations" + (" (finished before)" if s in done else "")
                            for s, n in zip(("32s", "16s", "8s"), counts))
    testing = f"val scored every {test_every} iterations and" if test_every else "val scored"
    return (f"fcnkit demo: {config.train} training / {config.val} val synthetic images of "
            f"{config.size}x{config.size} ({config.classes} shapes + background) -> {out}/data; "
            f"width-{Fraction(config.width).limit_denominator(256)} VGG FCNs trained from scratch on the {backend} backend: "
            f"{stages}; {testing} at the end of each stage; snapshots, metrics.jsonl, "
            f"overlays and summary.json under {out}/.")


def iteration_seconds(module: ModuleType, solver: Path, gpu: int | None) -> tuple[float, float]:
    """(seconds per training iteration, seconds per forward) of a solver's train net, measured
    on a net built for the purpose (forward + backward, no update, nothing written)."""
    solver = solver.resolve()
    read_solver_files(solver).snapshot_prefix.parent.mkdir(parents=True, exist_ok=True)
    with run_in(solver.parent):  # the solver checks its snapshot folder is writable
        net = module.make_solver(solver, gpu).net
        net.forward()
        net.backward()
        start = time.perf_counter()
        for _ in range(PASSES):
            net.forward()
            net.backward()
        middle = time.perf_counter()
        net.forward()
        end = time.perf_counter()
    return (middle - start) / PASSES, end - middle


def estimate_seconds(module: ModuleType, solvers: Sequence[Path], counts: Sequence[int],
                     stages: Sequence[str], done: Sequence[str], test_every: int, val: int,
                     gpu: int | None) -> tuple[float, float, str]:
    """(seconds the remaining training and testing should take, seconds per iteration of the
    first unfinished stage, that stage): per unfinished stage its remaining iterations x the
    measured rate, plus one forward per val image for each test (every `test_every` iterations
    and at the end)."""
    total, first, first_stage = 0.0, math.nan, ""
    for stage, solver, n in zip(stages, solvers, counts):
        if stage in done:
            continue
        first_stage = first_stage or stage
        state = latest_state(solver)
        start = iteration_of(state) if state is not None else 0
        train_s, forward_s = iteration_seconds(module, solver, gpu)
        first = train_s if math.isnan(first) else first
        tests = (n - 1) // test_every - start // test_every + 1 if test_every else 0
        total += max(n - start, 0) * train_s + tests * val * forward_s
    return total, first, first_stage


def duration(seconds: float) -> str:
    """'about 40 s' / 'about 3 min' / 'about 1.5 h'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
