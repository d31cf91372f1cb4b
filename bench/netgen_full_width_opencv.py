"""Full-width FCN deploy nets in OpenCV: load time, forward time, score shape (run by hand).

The test suite checks every generated deploy net at 1/32 width; this runs the VOC nets at full
width (FCN-VGG16: ~134M parameters, a ~540 MB caffemodel) with random weights, to show the
full-size files load and align the same way. Needs ~3 GB of memory.

    python bench/netgen_full_width_opencv.py [--models voc-fcn32s voc-fcn8s] [--sizes 224x224 500x500]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from netgen.proto import caffe_pb2
from netgen.schema import read_net
from netgen.shapes import param_shapes
from netgen.writer import generate
from surgery.caffemodel import Weights, save_weights

MODELS = ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet"]


def random_caffemodel(path: Path, net: caffe_pb2.NetParameter, seed: int = 0) -> None:
    """Random weights of every learnable blob (shapes from netgen.shapes), written by surgery."""
    rng = np.random.default_rng(seed)
    types = {layer.name: layer.type for layer in net.layer}
    weights = Weights(types={})
    for name, shapes in param_shapes(net).items():
        scale = [np.float32(1.0 / np.sqrt(np.prod(shape[1:]) or 1)) for shape in shapes]
        weights[name] = [rng.standard_normal(shape, dtype=np.float32) * k
                         for shape, k in zip(shapes, scale)]
        weights.types[name] = types[name]
    save_weights(path, weights)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--sizes", nargs="+", default=["224x224", "500x500"])
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = generate(name, tmp)
            deploy = folder / "deploy.prototxt"
            t = time.perf_counter()
            model = Path(tmp) / f"{name}.caffemodel"
            random_caffemodel(model, read_net(deploy))
            t_write = time.perf_counter() - t
            t = time.perf_counter()
            cvnet = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
            t_load = time.perf_counter() - t
            print(f"{name}: caffemodel {model.stat().st_size / 1e6:.0f} MB written in {t_write:.1f} s, "
                  f"OpenCV load {t_load:.1f} s")
            for h, w in sizes:
                cvnet.setInput(np.zeros((1, 3, h, w), np.float32))
                t = time.perf_counter()
                out = cvnet.forward("score")
                ok = "ok" if out.shape[2:] == (h, w) else "WRONG SIZE"
                print(f"  {h}x{w}: score {tuple(out.shape)} {ok}, forward {time.perf_counter() - t:.2f} s")
            model.unlink()


if __name__ == "__main__":
    main()
