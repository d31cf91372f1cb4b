"""Training curves of a run: loss (as logged and smoothed), learning rate and test scores,
one PNG with the stages marked — fcnkit's counterpart of Caffe's plot_training_log.py.

    python -m solvers.plot demo/                       # every metrics.jsonl under the folder
    python -m solvers.plot models/voc-fcn32s/snapshot/metrics.jsonl -o curves.png
    python -m solvers.plot caffe_train.log --jsonl metrics.jsonl   # a `caffe train` log

Input is fcnkit's metrics.jsonl (solvers.train.MetricsLog: "start", "train" and "test"
records) or the text log of real Caffe, parsed into the same records (parse_caffe_log):
  - glog lines of `caffe train` / pycaffe's solver (BVLC solver.cpp, sgd_solver.cpp):
    "Iteration N (x iter/s, ys/20 iters), loss = L" (older Caffe: "Iteration N, loss = L"),
    "Iteration N, lr = R", "Iteration N, Testing net (#k)" and
    "Test net output #j: NAME = V (* w = v loss)";
  - the reference FCN score.py lines ">>> DATE Iteration N overall accuracy|mean accuracy|
    mean IU|fwavacc|loss V", which carry the segmentation scores Caffe's own log lacks.
A run that spans several files (one per stage) is drawn end to end on one iteration axis.
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from netgen.errors import FcnkitError, cli_entry
from netgen.fileio import atomic_write, write_text_atomic

from .cliargs import Parser

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"
SMOOTH = 10  # records in the moving average drawn over the logged loss

# glog prefix "I0210 13:39:22.381027 25210 solver.cpp:204] " is skipped by searching, not matching
_ITER_LOSS = re.compile(r"\bIteration (\d+)(?: \([^)]*\))?, loss = (\S+)")
_ITER_LR = re.compile(r"\bIteration (\d+), lr = (\S+)")
_TESTING = re.compile(r"\bIteration (\d+), Testing net \(#(\d+)\)")
_TEST_OUT = re.compile(r"\bTest net output #\d+: (\S+) = (\S+)")
_SOLVING = re.compile(r"\] Solving (\S+)")
_FCN_SCORE = re.compile(r"^>>> .*?\bIteration (\d+) (overall accuracy|mean accuracy|mean IU|"
                        r"fwavacc|loss) (\S+)\s*$")
_FCN_KEYS = {"overall accuracy": "pixel_acc", "mean accuracy": "mean_acc", "mean IU": "mean_iu",
             "fwavacc": "fw_iu", "loss": "loss"}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_caffe_log(lines: Iterable[str], stage: str | None = None) -> list[dict]:
    """Records in metrics.jsonl form from the lines of a Caffe training log (see module doc).

    train records: {"phase": "train", "iter", "loss", "lr"} (lr from the "lr =" line of the
    same iteration); test records: {"phase": "test", "iter", "head", ...} with head
    "test net #k" holding the net's outputs by name, or head "score" holding the FCN
    score.py values (pixel_acc, mean_acc, mean_iu, fw_iu, loss). stage: label put into
    every record (default: the net name of the log's "Solving NAME" line, if any).
    """
    records: list[dict] = []
    train: dict[int, dict] = {}
    tests: dict[tuple[int, str], dict] = {}
    testing: tuple[int, str] | None = None
    label = stage

    def test_record(it: int, head: str) -> dict:
        if (it, head) not in tests:
            tests[(it, head)] = {"phase": "test", "iter": it, "head": head}
            records.append(tests[(it, head)])
        return tests[(it, head)]

    def train_record(it: int) -> dict:
        if it not in train:
            train[it] = {"phase": "train", "iter": it}
            records.append(train[it])
        return train[it]

    for line in lines:
        if (m := _FCN_SCORE.search(line.strip())) is not None:
            value = _number(m[3])
            test_record(int(m[1]), "score")[_FCN_KEYS[m[2]]] = value
        elif (m := _ITER_LOSS.search(line)) is not None:
            train_record(int(m[1]))["loss"] = _number(m[2])
            testing = None
        elif (m := _ITER_LR.search(line)) is not None:
            train_record(int(m[1]))["lr"] = _number(m[2])
            testing = None
        elif (m := _TESTING.search(line)) is not None:
            testing = (int(m[1]), f"test net #{m[2]}")
        elif testing is not None and (m := _TEST_OUT.search(line)) is not None:
            test_record(*testing)[m[1]] = _number(m[2])
        elif label is None and (m := _SOLVING.search(line)) is not None:
            label = m[1]
    if label is not None:
        for r in records:
            r["stage"] = label
    return records


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl, or of a Caffe log (any other file); a record written
    by a restart (a "start" record) replaces the logged iterations after its own."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise FcnkitError(f"{path}: cannot read ({e.strerror})") from None
    if path.suffix != ".jsonl":
        records = parse_caffe_log(text.splitlines())
        if not records:
            raise FcnkitError(f"{path}: no training records (neither a metrics.jsonl nor a "
                              "Caffe log with 'Iteration N, loss = ...' lines)")
        return records
    records: list[dict] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise FcnkitError(f"{path}:{n}: not a JSON record ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("iter"), int):
            raise FcnkitError(f"{path}:{n}: a metrics record needs an integer 'iter'")
        if record.get("phase") == "start":  # a restart or a resume from an earlier snapshot
            records = [r for r in records if r["iter"] <= record["iter"]]
        records.append(record)
    return records


@dataclass
class Stage:
    """One stage's records, placed on the run's iteration axis from `offset` on."""

    label: str
    offset: int
    train: list[dict] = field(default_factory=list)
    tests: list[dict] = field(default_factory=list)

    @property
    def end(self) -> int:
        iters = [r["iter"] for r in self.train + self.tests]
        return self.offset + (max(iters) if iters else 0)


def stages_of(files: Sequence[Path]) -> list[Stage]:
    """Stages in file order; within a file, consecutive records of one stage label."""
    stages: list[Stage] = []
    for path in files:
        for record in read_metrics(path):
            label = str(record.get("stage") or path.parent.name)
            if not stages or stages[-1].label != label:
                stages.append(Stage(label, stages[-1].end if stages else 0))
            phase = record.get("phase")
            if phase == "train" and record.get("loss") is not None:
                stages[-1].train.append(record)
            elif phase == "test":
                stages[-1].tests.append(record)
    return [s for s in stages if s.train or s.tests]


def run_files(run: Path) -> list[Path]:
    """The files of a run: the given file, or every metrics.jsonl under a folder, oldest
    last write first (stages are written one after another)."""
    if run.is_file():
        return [run]
    if not run.is_dir():
        raise FcnkitError(f"{run}: no such run folder or log file")
    found = sorted(run.rglob(METRICS_FILE), key=lambda p: (p.stat().st_mtime, str(p)))
    if not found:
        raise FcnkitError(f"{run}: no {METRICS_FILE} under this folder")
    return found


def _smooth(values: list[float], n: int) -> list[float]:
    """Trailing moving average over the last n values."""
    out, total = [], 0.0
    for k, v in enumerate(values):
        total += v - (values[k - n] if k >= n else 0.0)
        out.append(total / min(k + 1, n))
    return out


_SCORE_STYLE = (("mean_iu", "mean IU", "-"), ("pixel_acc", "pixel acc", "--"))
_NOT_SCORES = {"phase", "iter", "head", "stage", "elapsed_s", "n_pixels", "per_class_iu", "loss"}


def _test_points(test: dict) -> list[tuple[str, float, str]]:
    """(series, value in percent, line style) of a test record: mean IU and pixel accuracy,
    or, for a Caffe test net without them, its accuracy-like outputs (names with acc / iu)."""
    head = test.get("head")
    suffix = f" ({head})" if head and head != "score" else ""  # the usual single head: bare
    found = [(name + suffix, 100 * float(test[key]), style) for key, name, style in _SCORE_STYLE
             if isinstance(test.get(key), (int, float))]
    return found or [(key + suffix, 100 * float(v), ":") for key, v in test.items()
                     if key not in _NOT_SCORES and isinstance(v, (int, float))
                     and not isinstance(v, bool) and ("acc" in key.lower() or "iu" in key.lower())]


def plot_stages(stages: Sequence[Stage], out: Path, title: str = "") -> Path:
    """Draw loss / learning rate / test scores against the run's iteration into a PNG.

    Panels share the iteration axis; each later stage starts where the previous one ended,
    marked by a dotted line and its label. Test scores are drawn in percent per test head
    (mean IU solid, pixel accuracy dashed); a Caffe test net's own accuracy outputs are
    drawn by name when no segmentation scores were logged.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not stages:
        raise FcnkitError(f"{out}: nothing to plot (no train or test records)")
    fig, (ax_loss, ax_lr, ax_test) = plt.subplots(3, 1, figsize=(9, 8), sharex=True,
                                                  layout="constrained",
                                                  gridspec_kw={"height_ratios": [3, 1, 2]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles: dict[str, tuple[str, str]] = {}  # test series -> line style, colour
    for k, stage in enumerate(stages):
        x = [stage.offset + r["iter"] for r in stage.train]
        loss = [float(r["loss"]) for r in stage.train]
        first = k == 0
        ax_loss.plot(x, loss, color="0.7", lw=0.8, label="loss (logged)" if first else None)
        ax_loss.plot(x, _smooth(loss, SMOOTH), color="C0", lw=1.6,
                     label=f"smoothed ({SMOOTH} records)" if first else None)
        lr = [(stage.offset + r["iter"], r["lr"]) for r in stage.train if r.get("lr")]
        if lr:
            ax_lr.plot(*zip(*lr), color="C2", lw=1.4, drawstyle="steps-post")
        series: dict[str, list[tuple[int, float]]] = {}
        for test in stage.tests:
            for name, value, style in _test_points(test):
                styles.setdefault(name, (style, colours[len(styles) % len(colours)]))
                series.setdefault(name, []).append((stage.offset + test["iter"], value))
        for name, points in series.items():
            style, colour = styles[name]
            ax_test.plot(*zip(*points), style, marker="o", ms=3, color=colour,
                         label=None if _labelled(ax_test, name) else name)
    for k, stage in enumerate(stages):
        for ax in (ax_loss, ax_lr, ax_test):
            if k:
                ax.axvline(stage.offset, color="0.4", ls=":", lw=1)
        x0 = stage.offset + min(r["iter"] for r in stage.train + stage.tests)  # inside the axes
        ax_loss.annotate(stage.label, (x0, 1), xycoords=("data", "axes fraction"),
                         xytext=(4, -12), textcoords="offset points", fontsize=9, color="0.3")
    ax_loss.set_ylabel("train loss")
    ax_loss.legend(loc="upper right", fontsize=8)
    ax_lr.set_ylabel("learning rate")
    rates = [r["lr"] for s in stages for r in s.train if r.get("lr")]
    if rates and min(rates) > 0 and max(rates) / min(rates) > 20:
        ax_lr.set_yscale("log")
    else:
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_test.set_ylabel("test score (%)")
    ax_test.set_ylim(0, 100)
    ax_test.set_xlabel("iteration (stages end to end)" if len(stages) > 1 else "iteration")
    if ax_test.lines:
        ax_test.legend(loc="lower right", fontsize=8)
    else:
        ax_test.text(0.5, 0.5, "no tests logged", ha="center", va="center",
                     transform=ax_test.transAxes, color="0.5")
    for ax in (ax_loss, ax_lr, ax_test):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    with atomic_write(out, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out


def _labelled(ax, label: str) -> bool:
    return any(line.get_label() == label for line in ax.lines)


def plot_run(run: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """Plot a run folder (every metrics.jsonl under it), a metrics.jsonl or a Caffe log.

    out: the PNG (default: training.png in the folder, or <file>.png beside a file).
    title: above the panels (default: the folder or file name).
    Raises FcnkitError when nothing can be read or plotted.
    """
    run = Path(run)
    files = run_files(run)
    if out is None:
        out = run / PLOT_FILE if run.is_dir() else run.with_name(run.name + ".png")
    return plot_stages(stages_of(files), Path(out), title=title or run.resolve().name)


def plot_after_training(run: str | Path | Sequence[Path], out: str | Path,
                        title: str | None = None) -> Path | None:
    """Draw the curves at the end of a training command: `run` is a run folder or the
    metrics files of its stages in order. A plot that fails is reported in one line and never
    costs the run (returns None then)."""
    try:
        if isinstance(run, (str, Path)):
            path = plot_run(run, out, title)
        else:
            path = plot_stages(stages_of(list(run)), Path(out),
                               title=title or Path(out).parent.parent.name)
    except (FcnkitError, OSError, ImportError) as e:
        print(f"training curves not drawn: {e}", file=sys.stderr)
        return None
    print(f"training curves: {path}")
    return path


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m solvers.plot",
                description="Draw training curves (loss, learning rate, test scores) of a run "
                "folder, a metrics.jsonl or a Caffe training log into one PNG.")
    ap.add_argument("run", help="run folder (every metrics.jsonl under it, stages in the order "
                    "they were written), a metrics.jsonl, or a `caffe train` log")
    ap.add_argument("-o", "--out", help=f"PNG to write (default: RUN/{PLOT_FILE}, or "
                    "<file>.png beside a file)")
    ap.add_argument("--jsonl", help="also write the records read (e.g. parsed from a Caffe "
                    "log) as metrics JSON lines")
    a = ap.parse_args(argv)
    if a.jsonl:
        records = [r for path in run_files(Path(a.run)) for r in read_metrics(path)]
        write_text_atomic(Path(a.jsonl), "".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {plot_run(a.run, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
