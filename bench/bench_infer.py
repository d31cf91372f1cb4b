"""Inference latency of infer.py's Predictor, torch engine beside OpenCV; run by hand.

    python bench/bench_infer.py                      # 64x64 and 500x375, width 1/16, 9 images
    python bench/bench_infer.py --sizes 500x375 --width 0.25 --images 20

For each size: a width-scaled voc-fcn8s deploy net (`netgen generate`) with random weights,
then per backend, in a fresh child process each (so the first call pays what a fresh
`python infer.py` pays):
  import    importing solvers.predict and torch (paid by every fresh torch-backend process).
  load      Predictor construction (net build + weights), seconds.
  first     the first labels() call, seconds.
  steady    median labels() latency over the remaining images, seconds.
  img/s     `python infer.py ... --quiet` on the images as a whole command (interpreter
            start, imports, load, all images, PNG writing): images / wall-clock seconds.
Images are seeded uniform noise saved as PNG; width-scaled random nets only measure overheads
(shape passes, imports, per-call set-up), not full-width compute (bench_engine.py does that).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, statistics, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
import numpy as np
t0 = time.perf_counter()
from solvers.predict import Predictor
from solvers.data.readers import read_rgb
import torch
t1 = time.perf_counter()
p = Predictor(Path({deploy!r}), Path({weights!r}), {backend!r}, None, 'score')
t2 = time.perf_counter()
times = []
for path in {images!r}:
    rgb = read_rgb(Path(path))
    t = time.perf_counter(); p.labels(rgb, (104.0, 117.0, 123.0)); times.append(time.perf_counter() - t)
print(json.dumps(dict(imports=t1 - t0, load=t2 - t1, first=times[0],
                      steady=statistics.median(times[1:]))))
"""


def make_model(tmp: Path, width: float) -> tuple[Path, Path]:
    """A width-scaled voc-fcn8s deploy net and a caffemodel of seeded random weights."""
    subprocess.run([sys.executable, "-m", "netgen", "generate", "voc-fcn8s", "--width", str(width),
                    "--out", str(tmp)], cwd=ROOT, check=True, capture_output=True)
    deploy, weights = tmp / "voc-fcn8s" / "deploy.prototxt", tmp / "weights.caffemodel"
    subprocess.run([sys.executable, "-c", "import sys, torch; sys.path.insert(0, sys.argv[3]);"
                    "from solvers.engine.net import Net; torch.manual_seed(0);"
                    "Net(sys.argv[1], 'TEST').save(sys.argv[2])", str(deploy), str(weights),
                    str(ROOT)], check=True)
    return deploy, weights


def make_images(folder: Path, size: tuple[int, int], n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64x64,500x375", help="WxH list (64x64,500x375)")
    ap.add_argument("--width", type=float, default=0.0625, help="channel width factor (1/16)")
    ap.add_argument("--images", type=int, default=9, help="images per size (9)")
    ap.add_argument("--backends", default="torch,opencv", help="torch,opencv")
    a = ap.parse_args()
    print(f"{'size':>8} {'backend':>7} {'import s':>8} {'load s':>7} {'first s':>8} {'steady s':>9} {'img/s':>6}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        deploy, weights = make_model(tmp / "model", a.width)
        for text in a.sizes.split(","):
            size = tuple(int(v) for v in text.split("x"))
            images = make_images(tmp / text, size, a.images)
            for backend in a.backends.split(","):
                code = CHILD.format(root=str(ROOT), deploy=str(deploy), weights=str(weights),
                                    backend=backend, images=[str(p) for p in images])
                child = subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True)
                r = json.loads(child.stdout.strip().splitlines()[-1])
                t = time.perf_counter()
                subprocess.run([sys.executable, "infer.py", str(deploy), str(weights),
                                str(tmp / text), "-o", str(tmp / f"out-{text}-{backend}"),
                                "--backend", backend, "--quiet"], cwd=ROOT, check=True,
                               capture_output=True)
                rate = len(images) / (time.perf_counter() - t)
                print(f"{text:>8} {backend:>7} {r['imports']:8.3f} {r['load']:7.3f} {r['first']:8.3f} "
                      f"{r['steady']:9.4f} {rate:6.2f}", flush=True)


if __name__ == "__main__":
    main()
