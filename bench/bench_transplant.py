"""Benchmark: full-size VGG16 (138M parameters, legacy V1 caffemodel) -> FCN-32s transplant.

Generates a VGG16 classifier caffemodel with random weights in the published V1 format
(553 MB), then measures each step in a fresh process, so each peak is that step's own:
  load   load_weights of the V1 file
  save   load_weights + save_weights in the current format (atomic: temp file, fsync, rename)
  e2e    what `python surgery/transplant.py vgg16.caffemodel` does: load, transplant into the
         VOC FCN-32s, bilinear upsampling, atomic write, print the report
Figures: wall time, peak resident memory of the process (VmHWM), the same for the bare
interpreter with its imports (the baseline), and tracemalloc's peak of the arrays allocated
while loading. The orchestrating process imports nothing heavy, so children start small.

    python bench/bench_transplant.py [--dir DIR] [--keep]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _hwm_mb() -> float:
    """Peak resident set of this process since it started (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(stage: str, path: str, out: str) -> None:
    """One measured step, run in a fresh interpreter; prints its figures as a JSON line."""
    sys.path.insert(0, str(REPO))
    import tracemalloc

    import numpy as np

    from surgery.caffemodel import Weights, load_weights, save_weights
    from surgery.classifiers import vgg16
    from surgery.cli import transplant_script
    from surgery.shapes import net_params

    figures = {"baseline_mb": _hwm_mb()}
    start = time.perf_counter()
    if stage == "generate":
        rng = np.random.default_rng(0)
        weights = Weights()
        for name, params in net_params(vgg16()).items():
            weights[name] = [rng.standard_normal(p.shape, dtype=np.float32) * np.float32(0.01)
                             for p in params]
        save_weights(path, weights, net=vgg16(), legacy=True)
        figures["parameters"] = weights.param_count
    elif stage == "load":
        tracemalloc.start()
        figures["parameters"] = load_weights(path).param_count
        figures["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    elif stage == "save":
        weights = load_weights(path)
        loaded = time.perf_counter()
        save_weights(out, weights)
        figures["save_s"] = time.perf_counter() - loaded
    elif stage == "e2e":
        transplant_script([path, "--out", out])
    figures.update(wall_s=time.perf_counter() - start, peak_mb=_hwm_mb())
    print(json.dumps(figures))


def _run(stage: str, path: Path, out: Path) -> tuple[dict, list[str], float]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, __file__, "--child", stage, str(path), str(out)],
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{stage} failed:\n{result.stderr}")
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="where to put the 553 MB files (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench_transplant_"))
    source, current, fcn = (folder / n for n in ("vgg16.caffemodel", "vgg16-current.caffemodel",
                                                 "vgg16-fcn32s.caffemodel"))
    gen, _, _ = _run("generate", source, source)
    mb = source.stat().st_size / 1e6
    print(f"generated {source}: {gen['parameters']:,} parameters, {mb:.1f} MB, V1 format")

    def peak(figures: dict) -> str:
        above = figures["peak_mb"] - figures["baseline_mb"]
        return (f"peak RSS {figures['peak_mb']:.0f} MB = {figures['baseline_mb']:.0f} MB "
                f"interpreter+imports + {above:.0f} MB ({above / mb:.2f}x the file)")

    load, _, _ = _run("load", source, current)
    print(f"load_weights:  {load['wall_s']:5.2f} s, {peak(load)}; arrays allocated (tracemalloc "
          f"peak) {load['tracemalloc_peak_mb']:.0f} MB")
    save, _, _ = _run("save", source, current)
    print(f"load + save:   {save['wall_s']:5.2f} s (save {save['save_s']:.2f} s, with fsync), "
          f"{peak(save)}")
    e2e, report, wall = _run("e2e", source, fcn)
    print(f"transplant.py: {e2e['wall_s']:5.2f} s in-process ({wall:.2f} s from process start), "
          f"{peak(e2e)}")
    print("               " + next(line for line in report if "blobs (" in line))
    if args.keep:
        print(f"files kept in {folder}")
        return
    for path in (source, current, fcn):
        path.unlink(missing_ok=True)
    if not args.dir:
        folder.rmdir()


if __name__ == "__main__":
    main()
