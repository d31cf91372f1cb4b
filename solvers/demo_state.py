"""What a demo folder remembers between runs, so that re-running the demo is never a surprise.

<out>/run.json records the settings a demo run was started with (the DemoConfig, the iteration
counts per stage, the test interval, the backend) and each stage as it finishes (iteration,
weights, seconds, last test scores). With it:

- a second `python solve.py` with the same settings reuses the finished stages and continues an
  interrupted one from its latest snapshot (Caffe's .solverstate, via solvers.train's resume);
- `python solve.py --resume` does the same with the settings read back from run.json;
- `python solve.py --fresh` clears the old outputs first and starts over;
- other settings in a folder that holds a run are refused (add --fresh, or another --demo-dir),
  so the snapshots, metrics.jsonl and summary of two runs never share a folder.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from netgen.errors import FcnkitError
from netgen.fileio import write_text_atomic

from .seg_test import scores_record
from .stages import iteration_of, latest_state, stage_init
from .train import TrainResult, train

RUN_FILE = "run.json"
# Everything a demo run writes under its folder, cleared by --fresh (nothing else is touched).
OUTPUTS = ("data", "models", "overlays", "plots", "summary.json", RUN_FILE)
MODES = ("auto", "fresh", "resume")


def _stage_record(r: TrainResult) -> dict:
    return {"iter": r.iter, "weights": str(r.weights), "state": str(r.state),
            "metrics": str(r.metrics_path), "seconds": r.seconds, "backend": r.backend,
            "scores": {head: scores_record({}, head, m) for head, m in r.scores.items()}}


def _result(record: dict) -> TrainResult:
    nan = lambda v: float("nan") if v is None else v
    scores = {head: {k: nan(v) if not isinstance(v, (list, str)) else v for k, v in s.items()}
              for head, s in record["scores"].items()}
    return TrainResult(record["backend"], record["iter"], Path(record["weights"]),
                       Path(record["state"]), Path(record["metrics"]), scores, record["seconds"])


def _differences(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for each setting that differs (config fields flattened)."""
    flat = lambda d: {**{k: v for k, v in d.items() if k != "config"}, **d.get("config", {})}
    a, b = flat(old), flat(new)
    return [f"{k} {a.get(k)} there, {b.get(k)} now" for k in dict.fromkeys([*a, *b])
            if a.get(k) != b.get(k)]


@dataclass
class DemoRun:
    """The record of one demo folder: settings (JSON-shaped), whether its data set is
    complete, and the finished stages."""

    out: Path
    settings: dict
    stages: dict[str, dict] = field(default_factory=dict)
    data: bool = False

    @property
    def path(self) -> Path:
        return self.out / RUN_FILE

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps({"settings": self.settings, "data": self.data,
                                                 "stages": self.stages}, indent=2) + "\n")

    @classmethod
    def load(cls, out: Path) -> "DemoRun | None":
        """The folder's record; None when it has none. A damaged record is an error."""
        path = out / RUN_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(out, data["settings"], dict(data["stages"]), bool(data["data"]))
        except (ValueError, KeyError, TypeError):
            raise FcnkitError(f"{path}: not a demo run record; run with --fresh to start "
                              "over") from None

    def finished(self, stage: str) -> TrainResult | None:
        record = self.stages.get(stage)
        return _result(record) if record else None

    def finish(self, stage: str, result: TrainResult) -> None:
        self.stages[stage] = _stage_record(result)
        self.save()


def leftovers(out: Path) -> list[str]:
    """Demo outputs present in `out`."""
    return [name for name in OUTPUTS if (out / name).exists()]


def clear(out: Path) -> None:
    """Remove the demo's outputs from `out` (only the names in OUTPUTS)."""
    for name in leftovers(out):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def open_run(out: Path, settings: dict[str, Any] | None, mode: str = "auto") -> DemoRun:
    """The run to carry out in `out`, telling the user what happens to what is already there.

    settings: the run's settings (JSON-shaped); None with mode "resume" takes the recorded ones.
    mode: "auto" (reuse a run with the same settings, start one where there is none), "fresh"
    (clear the old outputs first), "resume" (continue the recorded run; an error without one).
    Raises FcnkitError for a record with other settings (auto/resume) or none (resume).
    """
    if mode not in MODES:
        raise FcnkitError(f"unknown demo mode {mode!r} (choose from {', '.join(MODES)})")
    if settings is not None:
        settings = json.loads(json.dumps(settings))  # tuples -> lists, as read back
    record = None if mode == "fresh" else DemoRun.load(out)
    if mode == "resume":
        if record is None:
            raise FcnkitError(f"--resume: {out} holds no demo run to continue ({RUN_FILE} "
                              "missing); run without --resume to start one")
        settings = record.settings if settings is None else settings
    if record is not None:
        changed = _differences(record.settings, settings)
        if changed:
            raise FcnkitError(f"{out} holds a demo run with other settings ({'; '.join(changed)})"
                              ": add --fresh to clear it and start over, or give another "
                              "--demo-dir")
        done = list(record.stages)
        print(f"{out}: continuing the demo run there" + (
            f" (finished stages {', '.join(done)} are reused)" if done else "") +
            "; --fresh starts over", flush=True)
        return record
    old = leftovers(out)
    if old:
        print(f"{out}: starting over; clearing the outputs of an earlier run "
              f"({', '.join(old)})", flush=True)
        clear(out)
    run = DemoRun(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    run.save()
    return run



def train_stages(run: DemoRun, stages: Sequence[str], solvers: Sequence[Path],
                 counts: Sequence[int], labels: Sequence[str], **options) -> list[TrainResult]:
    """solvers.stages.run_stages for a demo folder: each stage finished before is taken from
    the record, an interrupted one continues from its latest snapshot, the rest train from
    the previous stage's weights; every stage is recorded as it finishes."""

    results: list[TrainResult] = []
    for k, (stage, solver, n, label) in enumerate(zip(stages, solvers, counts, labels)):
        done = run.finished(stage)
        if done is not None:
            print(f"[{label}] finished before: iter {done.iter}, mean IU "
                  f"{100 * done.mean_iu:.2f} (reused)", flush=True)
            results.append(done)
            continue
        state = latest_state(solver)
        if state is not None:
            stopped = iteration_of(state)
            print(f"[{label}] continuing from iteration {stopped} ({state.name})", flush=True)
            result = train(solver, resume=state, iters=max(n - stopped, 0), stage=label,
                           **options)
        else:
            start = None if k == 0 else stage_init(results[-1].weights, solver, labels[k - 1])
            result = train(solver, weights=start, iters=n, stage=label, **options)
        run.finish(stage, result)
        results.append(result)
    return results
