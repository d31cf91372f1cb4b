#!/usr/bin/env python3
"""Mutation fuzzing of fcnkit's readers: only FcnkitError may escape, in bounded time and memory.

Each reader gets valid seed files written here by fcnkit's own writers (or PIL for images),
mutated byte- or token-wise (bit flips, interesting bytes and numbers, inserted, deleted and
duplicated runs, truncation, splices); every mutant must be accepted or end in FcnkitError.
Anything else (another exception, more than --input-seconds, a MemoryError under the
address-space limit) is an escape, printed with the mutant saved for replay.

    nice -n 10 python tests/fuzz_readers.py --seconds 180            # by hand, every reader
    python tests/fuzz_readers.py --count 40 --json                   # what the test suite runs

Readers: caffemodel (binary current/V1/V0), caffemodel-h5, solverstate, solverstate-h5,
prototxt (parse, netgen.shapes via explain and surgery.shapes.param_shapes, engine Net), param_str (data layers), image
(solvers.data.readers, infer.py and solvers.score image opening).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from netgen.errors import FcnkitError  # noqa: E402

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE)
INTERESTING_INTS = (0, 1, -1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, -(2**31), 2**32, 2**63 - 1,
                    -(2**63), 10**30, 4 * 10**54)


class InputTimeout(Exception):
    """One input ran past --input-seconds (raised by SIGALRM)."""


@dataclass
class Target:
    """A reader: seeds (name -> bytes) written into `work`, how to mutate, how to call it."""

    seeds: Callable[[Path], dict[str, bytes]]
    call: Callable[[Path], object]
    suffix: str
    mutate: Callable[[random.Random, bytes, list[bytes]], bytes] | None = None


@dataclass
class Report:
    tried: int = 0
    accepted: int = 0
    errors: int = 0
    escapes: list[str] = field(default_factory=list)
    slowest_s: float = 0.0


# ---------------------------------------------------------------------------------- mutation

def mutate_bytes(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """1-4 byte-level mutations of `data`."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(b) + 1) if b else 0
        if op == 0 and b:                                 # bit flip
            i = min(pos, len(b) - 1)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:                               # interesting byte
            b[min(pos, len(b) - 1)] = rng.choice(INTERESTING_BYTES)
        elif op == 2:                                     # insert random bytes
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:                               # delete a run
            del b[pos:pos + rng.randint(1, 16)]
        elif op == 4 and b:                               # duplicate a run
            run = b[pos:pos + rng.randint(1, 64)]
            b[pos:pos] = run
        elif op == 5 and b:                               # truncate
            del b[rng.randrange(len(b)):]
        elif op == 6:                                     # a long varint (huge length/dim)
            b[pos:pos] = bytes([0xFF] * rng.randint(1, 9) + [rng.randrange(1, 128)])
        elif op == 7 and b:                               # 4/8-byte interesting integer
            width = rng.choice((4, 8))
            value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
            b[pos:pos + width] = value.to_bytes(width, "little")
        elif op == 8 and others:                          # splice with another seed
            other = rng.choice(others)
            cut = rng.randrange(len(other) + 1)
            b[pos:] = other[cut:cut + rng.randint(1, 256)]
    return bytes(b)


_NUMBER = re.compile(rb"-?\d+(\.\d+)?(e-?\d+)?")
_STRING = re.compile(rb'"[^"\n]*"')


def mutate_text(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """Token-level mutations of a prototxt: numbers, names, lines; sometimes raw bytes."""
    if rng.random() < 0.15:
        return mutate_bytes(rng, data, others)
    text = data
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(4)
        if op == 0:
            numbers = list(_NUMBER.finditer(text))
            if numbers:
                m = rng.choice(numbers)
                value = str(rng.choice(INTERESTING_INTS + (0.0, -0.5, 1e300))).encode()
                text = text[:m.start()] + value + text[m.end():]
        elif op == 1:
            strings = list(_STRING.finditer(text))
            if strings:
                m, other = rng.choice(strings), rng.choice(strings)
                text = text[:m.start()] + other.group() + text[m.end():]
        elif op == 2:
            lines = text.split(b"\n")
            i = rng.randrange(len(lines))
            if rng.random() < 0.5:
                del lines[i]
            else:
                lines.insert(rng.randrange(len(lines) + 1), lines[i])
            text = b"\n".join(lines)
        else:
            fields = [b"group: 0", b"stride: 0", b"kernel_size: 0", b"dilation: 0",
                      b"pad: 100000", b"num_output: 0", b"axis: 7", b"axis: -9",
                      b"top: \"data\"", b"bottom: \"nothing\"", b"offset: 99",
                      b"slice_point: 0", b"tiles: 0", b"top_k: 1000", b"dim: 0",
                      b"dim: -1", b"dim: 100000000", b"global_pooling: true",
                      b"ignore_label: -7", b"coeff: 2"]
            spots = [m.end() for m in re.finditer(rb"(param|shape) \{", text)]
            if spots:
                at = rng.choice(spots)
                text = text[:at] + b" " + rng.choice(fields) + b" " + text[at:]
    return text


def _value(rng: random.Random, depth: int = 0):
    pick = rng.randrange(12)
    if pick < 4:
        return rng.choice(INTERESTING_INTS)
    if pick == 4:
        return rng.choice((float("nan"), float("inf"), -0.0, 1e308, 0.5, 1e-9, 2.0))
    if pick == 5:
        return rng.choice(("", "train", "val", "x" * 300, "../..", "\x00"))
    if pick == 6:
        return rng.choice((None, True, False))
    if pick < 10 and depth < 2:
        return tuple(_value(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 2))] if depth < 2 else 0


def mutate_param_str(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """A param_str dict with some keys given hostile values, or its text byte-mutated."""
    if rng.random() < 0.2:
        return mutate_bytes(rng, data, others)
    from solvers.data.synthetic import SyntheticSegDataset

    keys = list(SyntheticSegDataset.spec()) + ["unknown_key"]
    params = {"split": "train", "length": 3, "size": (16, 16)}
    for key in rng.sample(keys, rng.randint(1, 4)):
        params[key] = _value(rng)
    return repr(params).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------- seeds

def _weights():
    from surgery.caffemodel import Weights

    rng = np.random.default_rng(0)
    return Weights([("conv1", [rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                               rng.standard_normal(4).astype(np.float32)]),
                    ("fc", [rng.standard_normal((2, 4)).astype(np.float32)])],
                   types={"conv1": "Convolution", "fc": "InnerProduct"})


def _file_bytes(work: Path, name: str, write: Callable[[Path], None]) -> bytes:
    path = work / name
    write(path)
    return path.read_bytes()


def caffemodel_seeds(work: Path) -> dict[str, bytes]:
    from surgery import wire
    from surgery.caffemodel import save_weights

    w = _weights()
    seeds = {"current": _file_bytes(work, "a.caffemodel", lambda p: save_weights(p, w)),
             "v1": _file_bytes(work, "b.caffemodel", lambda p: save_weights(p, w, legacy=True))}
    # unpacked `data` (old writers): a BlobProto with shape {dim: 3} and three keyed floats
    blob = (wire.encode_len_field(7, wire.encode_varint_field(1, 3))
            + b"".join(wire.encode_key(5, wire.I32) + np.float32(v).tobytes() for v in (1, 2, 3)))
    layer = wire.encode_len_field(1, b"u") + wire.encode_len_field(2, b"Bias") \
        + wire.encode_len_field(7, blob)
    seeds["unpacked"] = wire.encode_len_field(100, layer)
    # V0 layer inside a V1 `layers` record, legacy dims
    v0_blob = b"".join(wire.encode_varint_field(n, d) for n, d in zip((1, 2, 3, 4), (1, 1, 2, 2))) \
        + wire.encode_len_field(5, np.arange(4, dtype="<f4").tobytes())
    v0 = wire.encode_len_field(1, b"conv") + wire.encode_len_field(2, b"conv") \
        + wire.encode_len_field(50, v0_blob)
    seeds["v0"] = wire.encode_len_field(2, wire.encode_len_field(1, v0))
    return seeds


def caffemodel_h5_seeds(work: Path) -> dict[str, bytes]:
    from surgery.caffemodel import save_weights

    return {"h5": _file_bytes(work, "a.caffemodel.h5",
                              lambda p: save_weights(p, _weights(), format="hdf5"))}


def _state():
    from solvers.engine.snapshot import SolverState

    return SolverState(iter=7, learned_net="net_iter_7.caffemodel", current_step=1,
                       history=[np.ones((2, 3), np.float32), np.zeros(4, np.float32)])


def solverstate_seeds(work: Path) -> dict[str, bytes]:
    from solvers.engine.snapshot import write_solverstate

    return {"binary": _file_bytes(work, "a.solverstate", lambda p: write_solverstate(p, _state()))}


def solverstate_h5_seeds(work: Path) -> dict[str, bytes]:
    from solvers.engine.snapshot import write_solverstate

    return {"h5": _file_bytes(work, "a.solverstate.h5", lambda p: write_solverstate(p, _state()))}


PROTOTXT = b'''name: "fuzz"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 16 dim: 16 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 group: 2 dilation: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "slice" type: "Slice" bottom: "pool1" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 2 } }
layer { name: "cat" type: "Concat" bottom: "s1" bottom: "s2" top: "cat" concat_param { axis: 1 } }
layer { name: "score" type: "Convolution" bottom: "cat" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "score" top: "up"
  convolution_param { num_output: 3 kernel_size: 4 stride: 2 group: 3 bias_term: false } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 1 } }
layer { name: "fuse" type: "Eltwise" bottom: "crop" bottom: "crop" top: "fuse" eltwise_param { operation: SUM coeff: 1 coeff: 1 } }
layer { name: "flat" type: "Reshape" bottom: "fuse" top: "flat" reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }
layer { name: "tile" type: "Tile" bottom: "flat" top: "tile" tile_param { axis: 1 tiles: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "tile" top: "fc" inner_product_param { num_output: 2 axis: 1 } }
layer { name: "arg" type: "ArgMax" bottom: "fuse" top: "arg" argmax_param { axis: 1 top_k: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fuse" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 normalize: false } }
layer { name: "acc" type: "Accuracy" bottom: "fuse" bottom: "label" top: "acc" accuracy_param { top_k: 1 } }
'''


def prototxt_seeds(work: Path) -> dict[str, bytes]:
    return {"net": PROTOTXT}


def param_str_seeds(work: Path) -> dict[str, bytes]:
    return {"synthetic": b"{'split': 'train', 'length': 3, 'size': (16, 16), 'seed': 1}"}


def image_seeds(work: Path) -> dict[str, bytes]:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    seeds = {}
    arrays = {"P": rng.integers(0, 21, (12, 10), dtype=np.uint8),
              "L": rng.integers(0, 255, (12, 10), dtype=np.uint8),
              "RGB": rng.integers(0, 255, (12, 10, 3), dtype=np.uint8),
              "RGBA": rng.integers(0, 255, (12, 10, 4), dtype=np.uint8),
              "I;16": rng.integers(0, 65535, (12, 10), dtype=np.uint16)}
    for mode, array in arrays.items():
        img = Image.fromarray(array) if mode != "P" else Image.fromarray(array, "L").convert("P")
        for fmt in ("PNG", "TIFF") if mode != "I;16" else ("PNG",):
            buf = io.BytesIO()
            img.save(buf, fmt)
            seeds[f"{mode}.{fmt}"] = buf.getvalue()
    for fmt in ("JPEG", "BMP", "GIF", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(arrays["RGB"]).save(buf, fmt)
        seeds[f"RGB.{fmt}"] = buf.getvalue()
    return seeds


# ---------------------------------------------------------------------------------- calls

def call_caffemodel(path: Path):
    from surgery.caffemodel import load_weights

    return load_weights(path)


def call_solverstate(path: Path):
    from solvers.engine.snapshot import read_solverstate

    return read_solverstate(path)


def call_prototxt(path: Path):
    from netgen.explain import explain
    from netgen.legacy import upgrade_net
    from netgen.schema import read_net
    from solvers.engine.net import Net

    from surgery.shapes import param_shapes

    net = upgrade_net(read_net(path))
    try:
        explain(net, (16, 16))
        param_shapes(net)  # what surgery sizes weights with
    finally:
        Net(path, "TRAIN")  # the engine meets the same net whatever explain thought of it


def call_param_str(path: Path):
    from solvers.data.layers import dataset_from_layer

    text = path.read_bytes().decode("utf-8", "replace")
    dataset = dataset_from_layer("solvers.data.layers", "SyntheticSegDataLayer", text, base_dir=path.parent)
    return dataset.batch(list(range(min(len(dataset), dataset.batch_size))))


def call_image(path: Path):
    import infer
    from solvers.data import readers

    for read in (readers.read_rgb, readers.read_index_png, readers.read_gray,
                 readers.read_color_png, readers.read_uint16_channels):
        try:
            read(path)
        except FcnkitError:
            pass
    infer.find_images([str(path)])


TARGETS: dict[str, Target] = {
    "caffemodel": Target(caffemodel_seeds, call_caffemodel, ".caffemodel"),
    "caffemodel-h5": Target(caffemodel_h5_seeds, call_caffemodel, ".caffemodel.h5"),
    "solverstate": Target(solverstate_seeds, call_solverstate, ".solverstate"),
    "solverstate-h5": Target(solverstate_h5_seeds, call_solverstate, ".solverstate.h5"),
    "prototxt": Target(prototxt_seeds, call_prototxt, ".prototxt", mutate_text),
    "param_str": Target(param_str_seeds, call_param_str, ".txt", mutate_param_str),
    "image": Target(image_seeds, call_image, ".png"),
}


# ---------------------------------------------------------------------------------- driver

def _on_alarm(signum, frame):
    raise InputTimeout()


def fuzz(name: str, work: Path, *, count: int | None = None, seconds: float | None = None,
         seed: int = 0, input_seconds: float = 5.0, keep: Path | None = None) -> Report:
    """Run one reader on mutants of its seeds until `count` inputs or `seconds` have passed."""
    target = TARGETS[name]
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    seeds = list(target.seeds(folder).values())
    mutate = target.mutate or mutate_bytes
    rng = random.Random(f"{name}:{seed}")
    report = Report()
    deadline = time.monotonic() + seconds if seconds else None
    signal.signal(signal.SIGALRM, _on_alarm)
    path = folder / f"input{target.suffix}"
    state = {"start": None, "data": b""}
    _watch(name, state, 3 * input_seconds, keep)
    for name_, data in target.seeds(folder).items():  # seeds must pass (and warm the caches)
        path.write_bytes(data)
        try:
            target.call(path)
        except Exception as e:  # noqa: BLE001 - a rejected seed makes the run meaningless
            report.escapes.append(f"{name} seed {name_!r} not accepted: {type(e).__name__}: {e}")
    while (count is None or report.tried < count) and (deadline is None
                                                       or time.monotonic() < deadline):
        data = mutate(rng, rng.choice(seeds), seeds)
        path.write_bytes(data)
        report.tried += 1
        start = time.perf_counter()
        state["start"], state["data"] = time.monotonic(), data
        signal.setitimer(signal.ITIMER_REAL, input_seconds)
        try:
            target.call(path)
            report.accepted += 1
        except FcnkitError:
            report.errors += 1
        except BaseException as e:  # noqa: BLE001 - anything else is what we hunt
            if isinstance(e, KeyboardInterrupt):
                raise
            signal.setitimer(signal.ITIMER_REAL, 0)
            where = traceback.extract_tb(e.__traceback__)[-1]
            line = (f"{name} #{report.tried}: {type(e).__name__}: {str(e)[:200]} "
                    f"at {Path(where.filename).name}:{where.lineno}")
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                saved = keep / f"{name}-{seed}-{report.tried}{target.suffix}"
                saved.write_bytes(data)
                line += f" (input saved as {saved})"
            report.escapes.append(line)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        state["start"] = None
        report.slowest_s = max(report.slowest_s, time.perf_counter() - start)
    state["done"] = True
    return report


def _watch(name: str, state: dict, limit: float, keep: Path | None) -> None:
    """A thread that ends the process (status 3) when one input runs past `limit` seconds:
    a loop inside C code (libhdf5, a decoder) never returns to Python for SIGALRM to stop it."""
    import os
    import threading

    def watch():
        while not state.get("done"):
            started = state["start"]
            if started is not None and time.monotonic() - started > limit:
                where = ""
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    saved = keep / f"{name}-hang"
                    saved.write_bytes(state["data"])
                    where = f" (input saved as {saved})"
                print(f"{name}: an input ran past {limit:.0f} s inside C code{where}",
                      file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def limit_memory(extra_gib: float) -> None:
    """Cap the address space at what is mapped now plus `extra_gib`: a reader that balloons
    meets MemoryError (an escape) instead of the machine's OOM killer."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    cap = vm + int(extra_gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _peak_rss() -> int:
    """This process's peak resident bytes since it started: VmHWM, which execve resets
    (ru_maxrss also keeps the exec'ing parent's, e.g. a large pytest worker's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readers", default=",".join(TARGETS), help="comma-separated subset")
    ap.add_argument("--count", type=int, help="inputs per reader")
    ap.add_argument("--seconds", type=float, help="time per reader")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input-seconds", type=float, default=5.0, help="bound per input (5)")
    ap.add_argument("--memory-gib", type=float, default=1.0,
                    help="address space allowed beyond the start (1 GiB)")
    ap.add_argument("--keep", type=Path, help="folder to save escaping inputs in")
    ap.add_argument("--json", action="store_true", help="one JSON report on stdout")
    a = ap.parse_args(argv)
    if a.count is None and a.seconds is None:
        a.count = 100
    names = [n for n in a.readers.split(",") if n]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown readers {unknown} (known: {', '.join(TARGETS)})")
    # import every reader's modules first, so their mappings are outside the memory cap
    import infer  # noqa: F401
    import solvers.engine.net  # noqa: F401
    from netgen import explain  # noqa: F401
    from solvers.data import layers  # noqa: F401
    limit_memory(a.memory_gib)
    results = {}
    with tempfile.TemporaryDirectory(prefix="fcnkit-fuzz-") as tmp:
        for name in names:
            start = time.monotonic()
            r = fuzz(name, Path(tmp), count=a.count, seconds=a.seconds, seed=a.seed,
                     input_seconds=a.input_seconds, keep=a.keep)
            results[name] = {"tried": r.tried, "accepted": r.accepted, "errors": r.errors,
                             "escapes": r.escapes, "slowest_s": round(r.slowest_s, 3),
                             "wall_s": round(time.monotonic() - start, 1)}
            if not a.json:
                print(f"{name:15} tried {r.tried:7}  accepted {r.accepted:6}  errors "
                      f"{r.errors:7}  escapes {len(r.escapes):3}  slowest {r.slowest_s:.2f} s",
                      flush=True)
                for line in r.escapes[:20]:
                    print("   ", line, flush=True)
    peak = _peak_rss()
    if a.json:
        print(json.dumps({"readers": results, "peak_rss_bytes": peak}))
    else:
        print(f"peak memory {peak / 2**20:.0f} MiB")
    return 1 if any(r["escapes"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
