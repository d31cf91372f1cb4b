#!/usr/bin/env python3
"""Train an FCN from its model folder, as the reference solve.py scripts do.

    python solve.py models/voc-fcn32s --weights VGG_ILSVRC_16_layers.caffemodel --gpu 0
    python solve.py models/voc-fcn32s --stages 32s,16s,8s --weights VGG16.caffemodel
    python solve.py models/voc-fcn8s --resume models/voc-fcn8s/snapshot/train_iter_4000.solverstate
    python solve.py            # no arguments: the synthetic demo, written to ./demo

Backends: pycaffe ("caffe"), fcnkit's PyTorch engine ("torch"), or "auto" (pycaffe when it
imports). Snapshots and metrics.jsonl go where the solver's snapshot_prefix points.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from netgen.errors import FcnkitError, cli_entry
from solvers.cliargs import Parser, count_list, non_negative, positive, use_threads

DEMO_ONLY = ("demo_dir", "demo_train", "demo_val", "demo_size")
EXAMPLES = """examples:
  python solve.py                          the demo: synthetic data, FCN-32s -> 16s -> 8s on
                                           the CPU, into ./demo (a few minutes; says how long)
  python solve.py                          again: reuses the finished stages in ./demo
  python solve.py --resume                 continue a demo stopped with Ctrl-C
  python solve.py --fresh                  clear ./demo and start the demo over
  python solve.py --demo-train 40 --demo-size 64 --iters 100 --demo-dir /tmp/small
  python solve.py models/voc-fcn32s --weights VGG_ILSVRC_16_layers.caffemodel --gpu 0
  python solve.py models/voc-fcn32s --stages 32s,16s,8s --weights VGG_ILSVRC_16_layers.caffemodel
  python solve.py models/voc-fcn32s --resume        continue from the latest snapshot
  python solve.py models/voc-fcn32s --resume models/voc-fcn32s/snapshot/train_iter_4000.solverstate

Snapshots (<prefix>_iter_N.caffemodel + .solverstate) and metrics.jsonl go where the solver's
snapshot_prefix points, relative to the model folder, as in Caffe."""


def build_parser() -> Parser:
    ap = Parser(prog="solve.py", description="Train an FCN model folder (solver.prototxt + nets); "
                "without a model, run the synthetic demo.", epilog=EXAMPLES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="model folder holding solver.prototxt, or a solver "
                    "prototxt (leave out for the demo)")
    ap.add_argument("--weights", help="initial weights: .caffemodel or .caffemodel.h5 (an "
                    "ImageNet classifier such as VGG16 is made fully convolutional first; "
                    "default: the nets' fillers)")
    ap.add_argument("--gpu", type=non_negative, help="GPU index (default: CPU)")
    ap.add_argument("--backend", default="auto", help="caffe | torch | auto (default: pycaffe "
                    "if it imports, else torch)")
    ap.add_argument("--iters", type=count_list, help="iterations to run (default: up to the "
                    "solver's max_iter; the demo: 1500,750,750); with --stages or the demo one "
                    "count or one per stage")
    ap.add_argument("--test-every", type=non_negative, help="score the val net every N "
                    "iterations (default: the solver's snapshot interval; the demo: 250; 0: "
                    "never)")
    ap.add_argument("--resume", nargs="?", const="", metavar="SOLVERSTATE",
                    help="continue from a .solverstate (default: the model's latest snapshot); "
                    "the demo: continue the run in --demo-dir with its recorded settings")
    ap.add_argument("--fresh", action="store_true", help="demo: clear the outputs of an "
                    "earlier run in --demo-dir and start over (default: reuse its finished "
                    "stages when the settings match)")
    ap.add_argument("--stages", help="train stage after stage, e.g. 32s,16s,8s: sibling model "
                    "folders named by stride, each starting from the previous one's weights "
                    "(default: the one model)")
    ap.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision on the torch "
                    "backend: nets under autocast, losses and updates in float32 (fp16 with a "
                    "dynamic loss scale; default: float32)")
    ap.add_argument("--threads", type=positive, help="torch CPU threads (default: what "
                    "torch picks, one per core; the demo: 1, its nets are tiny)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--allow-zero-init", action="store_true", help="train even when every "
                    "learnable weight starts at zero (reference recipe without --weights), "
                    "which is refused by default because such a net cannot learn")
    demo = ap.add_argument_group("demo (no model given)")
    demo.add_argument("--demo-dir", help="output folder (default: ./demo)")
    demo.add_argument("--demo-train", type=non_negative, help="synthetic training images "
                      "(default: 300)")
    demo.add_argument("--demo-val", type=non_negative, help="synthetic validation images "
                      "(default: 50)")
    demo.add_argument("--demo-size", type=non_negative, help="image side in pixels "
                      "(default: 128)")
    return ap


def _demo(a) -> int:
    from solvers import backends
    from solvers.demo import DemoConfig, run_demo

    if a.weights or a.resume or a.stages is not None:
        raise FcnkitError("the demo trains from scratch in stages 32s,16s,8s: --weights, "
                          "a .solverstate for --resume and --stages need a model folder")
    if a.resume is not None and a.fresh:
        raise FcnkitError("--resume continues the demo run, --fresh starts over: give one")
    backends.resolve(a.backend)
    overrides = {key: getattr(a, f"demo_{key}") for key in ("train", "val", "size")}
    overrides.update(amp=a.amp, threads=a.threads)
    given = {k: v for k, v in overrides.items() if v is not None}
    resume = a.resume is not None
    # resuming: the settings recorded in the demo folder, with what was given on top
    config = None if resume else DemoConfig(**given)
    mode = "resume" if resume else "fresh" if a.fresh else "auto"
    try:
        run_demo(Path(a.demo_dir or "demo"), config, backend=a.backend, gpu=a.gpu,
                 iters=a.iters, test_every=a.test_every, progress=not a.quiet, mode=mode,
                 changes=given)
    except KeyboardInterrupt:
        print(f"to continue: {continue_command(a)}", file=sys.stderr)
        raise
    return 0


def continue_command(a) -> str:
    """The command line that continues an interrupted demo run (the rest is in run.json)."""
    script = os.path.relpath(Path(__file__).resolve())
    words = ["python3", script, "--resume"]
    for option, value in (("--demo-dir", a.demo_dir), ("--gpu", a.gpu)):
        words += [option, str(value)] if value is not None else []
    words += ["--quiet"] if a.quiet else []
    return shlex.join(words)


def _train(a) -> int:
    from solvers import backends
    from solvers.stages import (latest_state, parse_stages, run_stages, solver_file,
                                stage_solvers)
    from solvers.solver_files import read_solver_files

    given = [f"--{k.replace('_', '-')}" for k in DEMO_ONLY if getattr(a, k) is not None]
    given += ["--fresh"] if a.fresh else []
    if given:
        raise FcnkitError(f"{', '.join(given)}: demo options, not used with a model folder")
    if a.resume is not None and (a.weights or a.stages is not None):
        raise FcnkitError("--resume continues one run: leave out --weights and --stages")
    if a.resume == "":
        state = latest_state(solver_file(a.model))
        if state is None:
            raise FcnkitError(f"--resume: {a.model} has no snapshot to continue from; give a "
                              ".solverstate")
        a.resume = str(state)
    for option, path in (("--weights", a.weights), ("--resume", a.resume)):
        if path and not Path(path).is_file():
            raise FcnkitError(f"{option} {path}: no such file")
    backends.resolve(a.backend)
    if a.stages is not None:  # an empty --stages is a mistake, not "no stages"
        solvers = stage_solvers(a.model, parse_stages(a.stages))
    else:
        solvers = [solver_file(a.model)]
        read_solver_files(solvers[0])
    iters = a.iters
    if iters is not None and len(iters) not in (1, len(solvers)):
        raise FcnkitError(f"--iters: give one count or one per stage ({len(solvers)}), "
                          f"got {len(iters)}")
    if iters is not None and len(iters) == 1:
        iters = iters[0]
    if a.stages and len(solvers) > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise FcnkitError("--stages under torchrun: run one torchrun per stage, each with "
                          "--weights set to the previous stage's final caffemodel")
    use_threads(a.threads)
    options = dict(backend=a.backend, gpu=a.gpu, test_every=a.test_every,
                   progress=not a.quiet, amp=a.amp, allow_zero_init=a.allow_zero_init)
    try:
        if a.resume:
            from solvers.train import train

            results = [train(solvers[0], iters=iters, resume=a.resume,
                             stage=solvers[0].parent.name, **options)]  # the run's stage label
        else:
            results = run_stages(solvers, weights=a.weights, iters=iters, **options)
    except KeyboardInterrupt:
        state = latest_state(solvers[0]) if len(solvers) == 1 else None
        if state is not None:
            print("to continue: " + shlex.join(["python3", os.path.relpath(Path(__file__)),
                                                a.model, "--resume", str(state)]),
                  file=sys.stderr)
        raise
    for solver, r in zip(solvers, results):
        score = f"mean IU {100 * r.mean_iu:.2f}" if r.scores else "not tested"
        print(f"{solver.parent.name}: iter {r.iter} ({r.backend}, {r.seconds:.1f} s), {score}; "
              f"weights {r.weights}; metrics {r.metrics_path}")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0 logs, so it plots
        from solvers.plot import PLOT_FILE, plot_after_training

        plot_after_training(list(dict.fromkeys(r.metrics_path for r in results)),
                            results[-1].metrics_path.parent / PLOT_FILE)
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return _demo(a) if a.model is None else _train(a)


if __name__ == "__main__":
    sys.exit(main())
