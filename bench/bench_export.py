"""ONNX / PyTorch export of a full-width FCN: export time, file size, forward time (run by hand).

    nice -n 10 python bench/bench_export.py                   # voc-fcn8s at 500x500
    python bench/bench_export.py --model voc-fcn32s --size 375x500 --repeat 5 --threads 2

A full-width deploy net (netgen generate) gets random weights (~134M parameters for FCN-8s,
a ~540 MB caffemodel, written by surgery.save_weights), then:
  export      `surgery.export_onnx.export_file` (dynamic N, H, W), seconds and MB on disk;
              the same with --fp16; `surgery.export_torch.export_file` (module + state_dict).
  forward     median of --repeat forwards at --size after one warm-up, each runtime with the
              same thread count: fcnkit's engine (solvers.engine.Net), onnxruntime (CPU, the
              dynamic file) and the generated PyTorch module; with the largest relative error
              of each `score` against the engine's and the share of pixels whose argmax agrees.
Needs ~4 GB of memory.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netgen_full_width_opencv import random_caffemodel  # noqa: E402

from netgen.errors import size_arg  # noqa: E402
from netgen.schema import read_net  # noqa: E402
from netgen.writer import generate  # noqa: E402
from solvers.engine import Net  # noqa: E402
from surgery import export_onnx, export_torch  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, object]:
    """(median seconds of `repeat` calls after one warm-up call, last result)."""
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="voc-fcn8s")
    ap.add_argument("--size", type=size_arg, default=(500, 500), metavar="HxW")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        deploy = generate(args.model, tmp) / "deploy.prototxt"
        weights = Path(tmp) / "random.caffemodel"
        random_caffemodel(weights, read_net(deploy))
        print(f"{args.model}: caffemodel {weights.stat().st_size / 1e6:.0f} MB, "
              f"{args.threads} threads, input {args.size[0]}x{args.size[1]}")
        files = {}
        for label, out, run in (
                ("onnx", "net.onnx", lambda o: export_onnx.export_file(deploy, weights, o)),
                ("onnx --fp16", "half.onnx",
                 lambda o: export_onnx.export_file(deploy, weights, o, fp16=True)),
                ("torch module", "fcn.py", lambda o: export_torch.export_file(deploy, weights, o))):
            path = Path(tmp) / out
            t = time.perf_counter()
            run(path)
            seconds = time.perf_counter() - t
            size = sum(p.stat().st_size for p in (path, path.with_suffix(".pt")) if p.exists())
            files[label] = path
            print(f"  export {label:13s} {seconds:6.1f} s  {size / 1e6:7.1f} MB")
        x = np.random.default_rng(0).standard_normal((1, 3, *args.size)).astype(np.float32)
        net = Net(deploy, "TEST", weights=weights)
        t_engine, ref = timed(lambda: net.forward(data=x)["score"].copy(), args.repeat)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(files["onnx"]), opts, providers=["CPUExecutionProvider"])
        t_ort, got = timed(lambda: sess.run(["score"], {"data": x})[0], args.repeat)
        spec = importlib.util.spec_from_file_location("fcn", files["torch module"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.load()
        with torch.no_grad():
            t_torch, got_torch = timed(lambda: model(torch.from_numpy(x)).numpy(), args.repeat)
        scale = np.abs(ref).max()
        for label, seconds, out in (("engine", t_engine, ref), ("onnxruntime", t_ort, got),
                                    ("torch module", t_torch, got_torch)):
            err = np.abs(out - ref).max() / scale
            agree = (out.argmax(1) == ref.argmax(1)).mean()
            print(f"  forward {label:12s} {seconds:6.2f} s  rel. error {err:.1e}  "
                  f"argmax agrees {100 * agree:.3f}%")


if __name__ == "__main__":
    main()
