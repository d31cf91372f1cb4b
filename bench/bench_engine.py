"""Speed and memory of fcnkit's PyTorch engine on full-width FCN-8s (VOC, 21 classes); run by hand.

    python bench/bench_engine.py                   # CPU: ~3-5 min on 2 cores
    python bench/bench_engine.py --device cuda     # GPU: forward + train at 500x500 and 2048x1024
    python bench/bench_engine.py --sections memory --mem-sizes 768x384,1448x724

Sections (every measurement runs in a child process of its own, so its peak RSS is its own and
a child that outgrows memory is killed without taking the bench down):
  forward  deploy net, TEST phase: engine images/s beside OpenCV DNN (readNetFromCaffe of the
           same deploy.prototxt + caffemodel, DNN_TARGET_CPU, same thread count), and the max
           relative difference of the two `score` outputs.
  train    the train net fed by Input layers (`netgen generate voc-fcn8s --data input`: data
           and label are Input tops; loss SoftmaxWithLoss, normalize false), iterated as the
           solver does (clear_param_diffs, then forward_backward).
  memory   CPU only: one forward_backward per --mem-sizes size; then a least-squares fit
           peak RSS = a + b * pixels (pixels = input H * W) over these and the train rows,
           beside Caffe's reported 2.8 GB + 0.0135 MB/pixel. A size the fit so far predicts
           above the limit (--mem-limit-gib, capped at MemAvailable - 0.5 GiB) is skipped; a
           child whose RSS passes the limit is killed and reported as such.

Table columns:
  section, impl     what ran: `engine` is solvers.engine.Net, `opencv` is cv2.dnn.
  device, size      where, and the input height x width (batch 1).
  threads           torch.set_num_threads = cv2.setNumThreads (default: the usable cores).
  reps              timed iterations, after the untimed warm-up ones.
  images/s, s/image over the timed iterations (batch 1: images = iterations).
  RSS base          resident memory once the net and its random weights exist (GiB = 2^30 B).
  peak RSS 1 it     process peak RSS (ru_maxrss) at the end of the child's first iteration
                    (warm-up or timed): one pass on a fresh net — what the fit uses.
  peak RSS          process peak RSS at the end of the child (all iterations: the steady state;
                    forward rows: includes the OpenCV net, which loads after the engine's
                    warm-up, so the engine's own figure is `peak RSS 1 it`).
  CUDA peak 1 it, CUDA peak
                    torch.cuda.max_memory_allocated over the first iteration / the worst one.
  max rel diff      forward rows: max|engine - cv2| / max|cv2| over the score blob.
Weights are random and the same in every child (seeded torch normal at He scale, biases
N(0, 0.01), Deconvolution kernels bilinear as FCN's `interp`); the input is a seeded uniform
image minus the VOC mean, labels uniform over the 21 classes with 5% void (255).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from netgen.errors import FcnkitError, cli_entry  # noqa: E402
from netgen.presets import VOC_MEAN  # noqa: E402
from solvers.engine import Net  # noqa: E402

MODEL = "voc-fcn8s"
GIB = 2 ** 30
CAFFE_FIT = (2.8, 0.0135)  # Caffe training FCN-8s: GB + MB per input pixel (reported figure)
SECTIONS = ("forward", "train", "memory")
# per-device defaults: the CPU run must fit in ~10 minutes on 2 cores
DEFAULTS = {
    "cpu": dict(sections=["forward", "train", "memory"], sizes=[(500, 500)], warmup=1, reps=2,
                opencv_reps=2, train_warmup=0, train_reps=2),
    "cuda": dict(sections=["forward", "train"], sizes=[(500, 500), (2048, 1024)], warmup=2,
                 reps=10, opencv_reps=1, train_warmup=1, train_reps=5),
}


# ------------------------------------------------------------------------- child process
def _rss_now() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) * 1024 / GIB


def _rss_peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def randomize(net: Net, seed: int) -> None:
    """Seeded He-normal weights, small biases, bilinear Deconvolution kernels. CPU tensors are
    filled in place (no weight-sized temporaries), so the base RSS is the net's own."""
    from surgery.interp import bilinear_weights
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for rec in net.layers:
            for i, p in enumerate(rec.params):
                t = p.tensor.detach()
                if rec.type == "Deconvolution" and i == 0:
                    t.copy_(torch.from_numpy(bilinear_weights(p.shape, rec.impl.group, rec.name)))
                    continue
                std = math.sqrt(2.0 / max(1, p.count // p.shape[0])) if i == 0 else 0.01
                if t.device.type == "cpu":
                    t.normal_(0.0, std, generator=gen)
                else:
                    t.copy_(torch.empty(p.shape).normal_(0.0, std, generator=gen))


def _inputs(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, (1, 3, h, w)).astype(np.float32)
    img -= np.asarray(VOC_MEAN, np.float32).reshape(1, 3, 1, 1)
    label = rng.integers(0, 21, (1, 1, h, w)).astype(np.float32)
    label[rng.random(label.shape) < 0.05] = 255
    return img, label


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _Peaks:
    """Peak memory per iteration: RSS at the end of the first and of the last, and the CUDA
    allocator's peak within the first and the worst iteration."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.first_rss: float | None = None
        self.first_cuda: float | None = None
        self.cuda_max = 0.0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def after_iteration(self) -> None:
        if self.cuda:
            peak = torch.cuda.max_memory_allocated() / GIB
            self.cuda_max = max(self.cuda_max, peak)
            self.first_cuda = peak if self.first_cuda is None else self.first_cuda
            torch.cuda.reset_peak_memory_stats()
        self.first_rss = _rss_peak() if self.first_rss is None else self.first_rss

    def result(self) -> dict:
        return dict(rss_peak_first=self.first_rss, rss_peak=_rss_peak(),
                    cuda_peak_first=self.first_cuda, cuda_peak=self.cuda_max if self.cuda else None)


def _timed(step, n: int, desc: str, device: str, peaks: _Peaks) -> float:
    """Mean seconds per call of step() over n calls (device synchronised around each)."""
    total = 0.0
    for _ in tqdm(range(n), desc=desc, leave=False, position=1, disable=n == 0):
        total += _once(step, device, peaks)
    return total / max(n, 1)


def _once(step, device: str, peaks: _Peaks) -> float:
    _sync(device)
    t0 = time.perf_counter()
    step()
    _sync(device)
    peaks.after_iteration()
    return time.perf_counter() - t0


def _forward_job(job: dict) -> list[dict]:
    """Engine forward (TEST phase) and, unless opencv_reps is 0, OpenCV on the same weights and
    image. The timed reps alternate between the two so that other load on the machine slows
    both alike; the engine's base and first-iteration RSS are taken before OpenCV loads."""
    h, w = job["size"]
    dev = job["device"]
    net = Net(job["deploy"], "TEST", device=dev)
    randomize(net, job["seed"])
    base = _rss_now()
    img, _ = _inputs(h, w, job["seed"])
    net.blobs["data"].reshape(1, 3, h, w)

    def step():
        net.blobs["data"].data[...] = img
        net.forward()

    peaks = _Peaks(dev)
    _timed(step, job["warmup"], "engine warm-up", dev, peaks)
    steps = [("engine", dev, step, peaks, job["reps"])]
    cv_step = None
    if job["opencv_reps"]:
        cv_step, outs = _opencv(job, net, img)
        cv_peaks = _Peaks("cpu")
        _timed(cv_step, min(job["warmup"], 1), "opencv warm-up", "cpu", cv_peaks)
        steps.append(("opencv", "cpu", cv_step, cv_peaks, job["opencv_reps"]))
    seconds = {name: 0.0 for name, *_ in steps}
    for i in tqdm(range(max(n for *_, n in steps)), desc=f"forward {h}x{w}", leave=False,
                  position=1):
        for name, device, fn, pk, n in steps:
            if i < n:
                seconds[name] += _once(fn, device, pk)
    ours = net.blobs["score"].data.copy()
    rows = [dict(impl="engine", device=dev, seconds=seconds["engine"] / max(job["reps"], 1),
                 reps=job["reps"], rss_base=base, **peaks.result())]
    if cv_step is not None:
        ref = outs[0]
        diff = float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-30))
        rows[0]["rel_diff"] = diff
        rows.append(dict(impl="opencv", device="cpu", reps=job["opencv_reps"], rel_diff=diff,
                         seconds=seconds["opencv"] / job["opencv_reps"], rss_peak=_rss_peak()))
    return rows


def _opencv(job: dict, net: Net, img: np.ndarray):
    """OpenCV DNN (CPU target) reading the deploy prototxt and `net`'s weights saved as a
    caffemodel; returns its forward step and the list its last score lands in."""
    import cv2
    weights = Path(job["tmp"]) / f"{MODEL}-seed{job['seed']}.caffemodel"
    if not weights.exists():
        net.save(weights)
    cv = cv2.dnn.readNetFromCaffe(job["deploy"], str(weights))
    cv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    outs: list[np.ndarray] = []

    def step():
        cv.setInput(img)
        outs[:] = [cv.forward("score")]

    return step, outs


def _train_job(job: dict) -> list[dict]:
    h, w = job["size"]
    dev = job["device"]
    net = Net(job["train"], "TRAIN", device=dev)
    randomize(net, job["seed"])
    base = _rss_now()
    img, label = _inputs(h, w, job["seed"])
    net.blobs["data"].reshape(1, 3, h, w)
    net.blobs["label"].reshape(1, 1, h, w)
    losses = []

    def step():
        net.blobs["data"].data[...] = img
        net.blobs["label"].data[...] = label
        net.clear_param_diffs()
        losses.append(net.forward_backward())

    peaks = _Peaks(dev)
    _timed(step, job["warmup"], "train warm-up", dev, peaks)
    sec = _timed(step, job["reps"], f"forward_backward {h}x{w}", dev, peaks)
    if not all(math.isfinite(x) for x in losses):
        raise FcnkitError(f"non-finite loss {losses}")
    return [dict(impl="engine", device=dev, seconds=sec, reps=job["reps"], rss_base=base,
                 loss=losses[-1], **peaks.result())]


def worker(job: dict) -> None:
    """Child entry: run one job, print its rows as one JSON line."""
    import cv2
    torch.manual_seed(job["seed"])  # Dropout masks: the same losses run to run
    torch.set_num_threads(job["threads"])
    cv2.setNumThreads(job["threads"])
    rows = (_forward_job if job["kind"] == "forward" else _train_job)(job)
    print("RESULT " + json.dumps(rows), flush=True)


# ------------------------------------------------------------------------- parent
@dataclass
class Row:
    section: str
    impl: str
    device: str
    size: tuple[int, int]
    threads: int
    reps: int
    seconds: float | None = None
    rss_base: float | None = None
    rss_peak_first: float | None = None
    rss_peak: float | None = None
    cuda_peak_first: float | None = None
    cuda_peak: float | None = None
    rel_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


def _meminfo(key: str, path: str = "/proc/meminfo") -> float:
    try:
        with open(path) as f:
            m = re.search(rf"{key}:\s+(\d+)", f.read())
    except OSError:
        return 0.0
    return int(m[1]) * 1024 / GIB if m else 0.0


def run_child(job: dict, limit_gib: float) -> tuple[list[dict] | None, str]:
    """Run one job in a child process, killing it if its RSS passes limit_gib.
    Returns (rows, "") or (None, why there are none)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    killed = threading.Event()
    seen = [0.0]

    def watch():
        while proc.poll() is None:
            rss = _meminfo("VmRSS", f"/proc/{proc.pid}/status")
            seen[0] = max(seen[0], rss)
            if rss > limit_gib:
                killed.set()
                proc.kill()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    watcher.join()
    if killed.is_set():
        return None, f"stopped: RSS passed {limit_gib:.1f} GiB"
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return None, f"child failed (exit {proc.returncode}, RSS seen {seen[0]:.1f} GiB)"
    return json.loads(lines[-1][len("RESULT "):]), ""


def fit(rows: list[Row]) -> tuple[float, float, list[tuple[int, int]]] | None:
    """Least squares peak RSS of one pass = a + b * pixels (GiB, GiB per pixel) over the CPU
    engine train/memory rows; also returns the sizes used."""
    pts = {r.size: r.rss_peak_first for r in rows
           if r.section in ("train", "memory") and r.device == "cpu" and r.impl == "engine"
           and r.rss_peak_first is not None}
    if len({h * w for h, w in pts}) < 2:
        return None
    x = np.array([h * w for h, w in pts], float)
    b, a = np.polyfit(x, np.array(list(pts.values())), 1)
    return float(a), float(b), sorted(pts, key=lambda s: s[0] * s[1])


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or min(int(m[1]), int(m[2])) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 500x500, not {text!r}")
    return int(m[1]), int(m[2])


def _csv(kind):
    def parse(text: str) -> list:
        return [kind(t) for t in text.split(",") if t.strip()]
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=list(DEFAULTS))
    ap.add_argument("--sections", type=_csv(str), metavar="LIST",
                    help="comma list of forward,train,memory (default: all three on cpu, "
                         "forward,train on cuda)")
    ap.add_argument("--sizes", type=_csv(_size), metavar="HxW,...",
                    help="sizes for forward and train (default: 500x500 on cpu; 500x500,"
                         "2048x1024 on cuda)")
    ap.add_argument("--mem-sizes", type=_csv(_size), default=[(1024, 512), (2048, 1024)],
                    metavar="HxW,...", help="sizes for the memory section (default "
                                            "1024x512,2048x1024)")
    ap.add_argument("--warmup", type=int, help="untimed forwards (default: cpu 1, cuda 2)")
    ap.add_argument("--reps", type=int, help="timed engine forwards (default: cpu 2, cuda 10)")
    ap.add_argument("--opencv-reps", type=int,
                    help="timed OpenCV forwards (on the CPU), after min(warmup, 1) untimed "
                         "(default: cpu 2, cuda 1; 0 skips OpenCV and the difference check)")
    ap.add_argument("--train-warmup", type=int,
                    help="untimed forward_backward iterations (default: cpu 0, cuda 1)")
    ap.add_argument("--train-reps", type=int,
                    help="timed forward_backward iterations (default: cpu 2, cuda 5)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch and OpenCV threads (default: the usable cores)")
    ap.add_argument("--mem-limit-gib", type=float, default=20.0,
                    help="kill a child whose RSS passes this, skip memory sizes the fit predicts "
                         "above it (capped at MemAvailable - 0.5 GiB; default 20)")
    ap.add_argument("--width", type=float, default=1.0,
                    help="channel width multiplier of the generated net (default 1: full)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return args
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    if args.device == "cuda" and "memory" in args.sections:
        ap.error("the memory section measures CPU RSS; on cuda the train rows give CUDA peaks")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    return args


def _jobs(args, files: dict, tmp: str) -> list[tuple[Row, dict]]:
    common = dict(device=args.device, threads=args.threads, seed=args.seed, tmp=tmp, **files)
    jobs = []
    if "forward" in args.sections:
        for size in args.sizes:
            jobs.append((Row("forward", "engine", args.device, size, args.threads, args.reps),
                         dict(common, kind="forward", size=size, warmup=args.warmup,
                              reps=args.reps, opencv_reps=args.opencv_reps)))
    if "train" in args.sections:
        for size in args.sizes:
            jobs.append((Row("train", "engine", args.device, size, args.threads, args.train_reps),
                         dict(common, kind="train", size=size, warmup=args.train_warmup,
                              reps=args.train_reps)))
    if "memory" in args.sections:
        for size in sorted(args.mem_sizes, key=lambda s: s[0] * s[1]):
            jobs.append((Row("memory", "engine", "cpu", size, args.threads, 1),
                         dict(common, kind="train", size=size, warmup=0, reps=1)))
    return jobs


def _add_rows(row: Row, results: list[dict] | None, why: str, rows: list[Row]) -> None:
    if results is None:
        row.notes.append(why)
        rows.append(row)
        return
    for i, res in enumerate(results):
        r = row if i == 0 else Row(row.section, res["impl"], res["device"], row.size,
                                   row.threads, res["reps"])
        for key, value in res.items():
            if key == "loss":
                r.notes.append(f"loss {value:.4g}")
            else:
                setattr(r, key, value)
        rows.append(r)


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}e}" if 0 < abs(v) < 1e-2 else f"{v:.{digits}f}"
    return str(v)


def table(rows: list[Row]) -> str:
    head = ["section", "impl", "device", "size", "threads", "reps", "images/s", "s/image",
            "RSS base", "peak RSS 1 it", "peak RSS", "CUDA peak 1 it", "CUDA peak",
            "max rel diff", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.section, r.impl, r.device, f"{r.size[0]}x{r.size[1]}", r.threads, r.reps,
                 _fmt(1.0 / r.seconds if r.seconds else None, 3), _fmt(r.seconds),
                 _fmt(r.rss_base), _fmt(r.rss_peak_first), _fmt(r.rss_peak),
                 _fmt(r.cuda_peak_first), _fmt(r.cuda_peak), _fmt(r.rel_diff),
                 "; ".join(r.notes)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def fit_lines(rows: list[Row]) -> list[str]:
    f = fit(rows)
    if f is None:
        return []
    a, b, sizes = f
    target = 2048 * 1024
    ca, cb = CAFFE_FIT
    used = ", ".join(f"{h}x{w}" for h, w in sizes)
    return [f"- engine: peak RSS of one forward_backward ≈ {a:.2f} GiB + "
            f"{b * GIB / 2**20:.5f} MiB/pixel (least squares over {used}); "
            f"at 2048x1024: {a + b * target:.2f} GiB",
            f"- Caffe (reported): {ca} GB + {cb} MB/pixel; at 2048x1024: "
            f"{ca + cb * target / 1000:.1f} GB"]


def _generate(width: float, out: str) -> dict:
    from netgen.writer import generate
    folder = generate(MODEL, out, width=width, data="input")
    return dict(deploy=str(folder / "deploy.prototxt"), train=str(folder / "train.prototxt"))


def _skip_reason(row: Row, rows: list[Row], limit: float) -> str | None:
    """Memory rows the fit so far says would pass the limit are not run."""
    f = fit(rows)
    if row.section != "memory" or f is None:
        return None
    predicted = f[0] + f[1] * row.pixels
    if predicted <= limit:
        return None
    return f"skipped: fit predicts {predicted:.1f} GiB > limit {limit:.1f} GiB"


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
        jobs = _jobs(args, _generate(args.width, tmp), tmp)
        bar = tqdm(jobs, desc="bench", position=0)
        for row, job in bar:
            bar.set_postfix_str(f"{row.section} {row.device} {row.size[0]}x{row.size[1]}")
            limit = min(args.mem_limit_gib, _meminfo("MemAvailable") - 0.5)
            skip = _skip_reason(row, rows, limit)
            if skip:
                row.notes.append(skip)
                rows.append(row)
                continue
            _add_rows(row, *run_child(job, limit), rows)
        bar.close()
    load = os.getloadavg()
    print(f"\n## fcnkit engine bench: {MODEL}, width {args.width:g}, torch {torch.__version__}, "
          f"{len(os.sched_getaffinity(0))} usable cores\n")
    print(table(rows))
    fits = fit_lines(rows)
    if fits:
        print("\nMemory fit (GiB = 2^30 bytes; Caffe's figure as reported):")
        print("\n".join(fits))
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          "(other work on the machine slows the timings, not the memory figures)")
    print(f"\ncommand: `{command}`")


if __name__ == "__main__":
    main()
