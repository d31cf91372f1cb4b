"""Peak memory of whole-image vs tiled inference (infer.py --tile) on one large image; by hand.

    nice python bench/bench_tiles.py                            # 3000x3000, width 1/16, tiles 1024, 2048
    nice python bench/bench_tiles.py --size 2000 --width 0.25 --tiles 0,1024

A width-scaled voc-fcn8s deploy net with seeded random weights (bench_infer.make_model) and one
seeded noise image; each tile size (0: the whole image in one forward) runs in a fresh child
process, which reports:
  load MiB   resident memory after building the Predictor (interpreter, torch, weights).
  peak MiB   peak resident memory of the process (ru_maxrss) after labels().
  windows    forward passes (1 for the whole image).
  seconds    labels() wall time.
  same       whether the label map equals the whole-image one (md5 of the array).
On a CUDA machine (--device cuda) the figures are torch.cuda.max_memory_allocated instead.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_infer import make_model

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import hashlib, json, resource, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
import numpy as np
import torch
from solvers.predict import Predictor
gpu = 0 if {device!r} == "cuda" else None
p = Predictor(Path({deploy!r}), Path({weights!r}), "torch", gpu, "score")
rgb = np.random.default_rng(0).integers(0, 256, ({size}, {size}, 3), dtype=np.uint8)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
load = torch.cuda.memory_allocated() / 2**20 if gpu is not None else rss()
tile = {tile} or None
windows = len(p.tiler.tiles({size}, {size}, tile)) if tile else 1
t = time.perf_counter()
labels = p.labels(rgb, (104.0, 117.0, 123.0), tile=tile)
seconds = time.perf_counter() - t
peak = torch.cuda.max_memory_allocated() / 2**20 if gpu is not None else rss()
print(json.dumps(dict(load=load, peak=peak, windows=windows, seconds=seconds,
                      md5=hashlib.md5(labels.tobytes()).hexdigest())))
"""


def measure(deploy: Path, weights: Path, size: int, tile: int, device: str,
            threads: int) -> dict:
    env_code = f"import torch; torch.set_num_threads({threads})\n"
    code = env_code + CHILD.format(root=str(ROOT), deploy=str(deploy), weights=str(weights),
                                   size=size, tile=tile, device=device)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=3000, help="image side, pixels (3000)")
    ap.add_argument("--width", type=float, default=1 / 16, help="VGG channel multiplier (1/16)")
    ap.add_argument("--tiles", default="0,2048,1024", help="tile sizes, 0 = whole (0,2048,1024)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        deploy, weights = make_model(Path(tmp), a.width)
        rows = [(t, measure(deploy, weights, a.size, t, a.device, a.threads))
                for t in map(int, a.tiles.split(","))]
    whole = next((r.get("md5") for t, r in rows if t == 0), None)
    unit = "GPU MiB" if a.device == "cuda" else "MiB"
    print(f"voc-fcn8s width {a.width:g}, {a.size}x{a.size} image, {a.device}:")
    print(f"{'tile':>6} {'load ' + unit:>12} {'peak ' + unit:>12} {'windows':>8} {'seconds':>8}  same")
    for tile, r in rows:
        if "error" in r:
            print(f"{tile or 'whole':>6}  failed: {r['error']}")
            continue
        same = "-" if whole is None or tile == 0 else ("yes" if r["md5"] == whole else "NO")
        print(f"{tile or 'whole':>6} {r['load']:>12.0f} {r['peak']:>12.0f} {r['windows']:>8} "
              f"{r['seconds']:>8.1f}  {same}")


if __name__ == "__main__":
    main()
