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
from netgen.writer import generate

MODELS = ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _blob(shape: tuple[int, ...], rng: np.random.Generator) -> caffe_pb2.BlobProto:
    """A random BlobProto, its data parsed from packed bytes (fast for ~100M floats)."""
    scale = 1.0 / float(np.sqrt(np.prod(shape[1:]) or 1))
    data = (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).tobytes()
    blob = caffe_pb2.BlobProto.FromString(bytes([5 << 3 | 2]) + _varint(len(data)) + data)
    blob.shape.dim.extend(shape)
    return blob


def random_caffemodel(net: caffe_pb2.NetParameter, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels: dict[str, int] = {}
    weights = caffe_pb2.NetParameter()
    for layer in net.layer:
        if layer.type == "Input":
            channels.update({t: s.dim[1] for t, s in zip(layer.top, layer.input_param.shape)})
            continue
        cin = channels[layer.bottom[0]]
        cout = cin
        if layer.type in ("Convolution", "Deconvolution"):
            p = layer.convolution_param
            cout, k, g = p.num_output, p.kernel_size[0], p.group
            shape = (cout, cin // g, k, k) if layer.type == "Convolution" else (cin, cout // g, k, k)
            out = weights.layer.add(name=layer.name, type=layer.type)
            out.blobs.append(_blob(shape, rng))
            if p.bias_term:
                out.blobs.append(_blob((cout,), rng))
        elif layer.type == "Scale":
            weights.layer.add(name=layer.name, type=layer.type).blobs.append(_blob((cin,), rng))
        elif layer.type == "Concat":
            cout = sum(channels[b] for b in layer.bottom)
        channels.update({t: cout for t in layer.top})
    return weights.SerializeToString()


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
            model.write_bytes(random_caffemodel(read_net(deploy)))
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
