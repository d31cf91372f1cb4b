"""Speed and memory of fcnkit's PyTorch engine on full-width FCN-8s (VOC, 21 classes); run by hand.

    python bench/bench_engine.py                   # CPU: all sections, ~15-40 min on 2 cores
    python bench/bench_engine.py --sections forward --reps 5
    python bench/bench_engine.py --device cuda     # GPU: forward + train at 500x500 and 2048x1024

Sections (each runs in child processes; timings are interleaved inside one child, one call
of every variant per round, so load from other work on the machine hits all variants alike
and the ratios hold where the absolute times do not):
  forward  deploy net, TEST phase, in rounds over: the engine in float32 and under amp bf16,
           each channels-last and NCHW; the same FCN-8s written straight in PyTorch (bench/plain_fcn8s.py) in
           float32 NCHW, float32 channels-last and bf16 channels-last (the ceilings); OpenCV
           DNN (readNetFromCaffe, DNN_TARGET_CPU, same thread count) and pycaffe in CPU mode
           when it imports. max rel diff: each `score` against OpenCV's (plain stacks: against
           the engine's float32).
  train    forward + backward as the solver iterates (clear_param_diffs, forward_backward) of
           the train net fed by Input layers (`netgen generate voc-fcn8s --data input`;
           SoftmaxWithLoss, normalize false), engine float32 and bf16 beside the plain stacks
           (summed cross-entropy, bf16 stack trained in bf16 outright), interleaved.
  memory   CPU only: one forward_backward of the engine per --mem-sizes size and precision,
           each in a child of its own (peak RSS is that run's); a least-squares fit of the
           float32 rows, peak RSS = a + b * pixels, beside Caffe's reported 2.8 GB + 0.0135
           MB/pixel. A size the fit so far predicts above the limit (--mem-limit-gib, capped
           at MemAvailable - 0.5 GiB) is skipped; a child passing the limit is killed.
  load     CPU only: fp32 forward_backward of the engine and of the plain NCHW stack, alone
           and beside one CPU-bound process (a Python busy loop), round by round, under
           fcnkit's OpenMP wait policy (PASSIVE, solvers/__init__.py) and libgomp's default.

Table columns:
  impl              engine fp32 / bf16: solvers.engine.Net as it runs by default (float32 NCHW,
                    bf16 channels-last), ... CL / NCHW: the other layout; plain ...
                    (bench/plain_fcn8s.py, CL = channels-last), opencv, pycaffe.
  size, threads     input height x width (batch 1); torch.set_num_threads = cv2.setNumThreads.
  reps              timed rounds (after one untimed round).
  s/image           mean seconds per call; ratio: to the engine's float32 in the same child.
  RSS base          memory rows: resident memory once the net and its weights exist (GiB).
  peak RSS 1 it     memory rows: process peak RSS (ru_maxrss) after the one forward_backward.
  CUDA peak 1 it, CUDA peak
                    torch.cuda.max_memory_allocated over the first iteration / the worst one.
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

import torch  # noqa: E402  (before solvers: a worker keeps the OMP_WAIT_POLICY it was given)
from tqdm import tqdm  # noqa: E402

# the policy libgomp read when torch loaded; importing solvers sets PASSIVE only if unset
OMP_POLICY = os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default)")

from netgen.errors import FcnkitError, cli_entry  # noqa: E402
from netgen.presets import VOC_MEAN  # noqa: E402
from solvers.engine import Net  # noqa: E402

MODEL = "voc-fcn8s"
GIB = 2 ** 30
CAFFE_FIT = (2.8, 0.0135)  # Caffe training FCN-8s: GB + MB per input pixel (reported figure)
SECTIONS = ("forward", "train", "memory", "load")
# per-device defaults: the CPU run must fit in ~10 minutes on 2 cores
DEFAULTS = {
    "cpu": dict(sections=["forward", "train", "memory", "load"], sizes=[(500, 500)], reps=3,
                opencv_reps=1, train_reps=2),
    "cuda": dict(sections=["forward", "train"], sizes=[(500, 500), (2048, 1024)],
                 reps=10, opencv_reps=1, train_reps=5),
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


def _variant_net(job: dict, phase: str, base: Net | None, amp: str | None,
                 channels_last: bool | None) -> Net:
    """An engine net of the job's model sharing `base`'s Params (one set of float32 weights
    and one half copy for every engine variant), or the first one with random weights."""
    net = Net(job["deploy" if phase == "TEST" else "train"], phase, device=job["device"],
              amp=amp, channels_last=channels_last)
    if base is None:
        randomize(net, job["seed"])
    else:
        net.share_weights(base)
    return net


def _plain_steps(job: dict, net: Net, img: np.ndarray, label: np.ndarray | None) -> dict:
    """The plain-PyTorch FCN-8s (bench/plain_fcn8s.py) on `net`'s weights: fp32 NCHW, fp32
    channels-last and bf16 channels-last (weights cast once, no autocast), forward (label None)
    or forward + backward of the summed cross-entropy (SoftmaxWithLoss, normalize false)."""
    import torch.nn.functional as F
    from plain_fcn8s import fcn8s, weights_of
    dev = job["device"]
    steps = {}
    for name, dtype, cl in (("plain fp32", torch.float32, False),
                            ("plain fp32 CL", torch.float32, True),
                            ("plain bf16 CL", torch.bfloat16, True)):
        w = weights_of(net, dtype, cl, requires_grad=label is not None)
        fmt = torch.channels_last if cl else torch.contiguous_format
        x = torch.from_numpy(img).to(dev, dtype).contiguous(memory_format=fmt)
        if label is None:
            def step(w=w, x=x):
                with torch.no_grad():
                    return fcn8s(w, x)
        else:
            target = torch.from_numpy(label[:, 0]).to(dev).long()

            def step(w=w, x=x, target=target):
                for wb in w.values():
                    for t in wb:
                        if t is not None:
                            t.grad = None
                score = fcn8s(w, x)
                F.cross_entropy(score.float(), target, ignore_index=255, reduction="sum").backward()
        steps[name] = step
    return steps


# (name, amp, channels_last): "engine fp32" / "engine bf16" run as the engine does by default
# (float32 NCHW, bf16 channels-last)
ENGINE_VARIANTS = (("engine fp32", None, False), ("engine fp32 CL", None, True),
                   ("engine bf16", "bf16", True), ("engine bf16 NCHW", "bf16", False))


def _interleaved(steps: dict, rounds: int, device: str, desc: str) -> dict[str, float]:
    """Mean seconds per call of each step over `rounds` rounds, one call of every step per
    round (after one untimed round): load on the machine hits all steps alike."""
    peaks = _Peaks(device)
    for fn in tqdm(steps.values(), desc=f"{desc} warm-up", leave=False, position=1):
        _once(fn, device, peaks)
    seconds = {name: 0.0 for name in steps}
    for _ in tqdm(range(rounds), desc=desc, leave=False, position=1):
        for name, fn in steps.items():
            seconds[name] += _once(fn, device, peaks)
    return {name: t / max(rounds, 1) for name, t in seconds.items()}


def _forward_job(job: dict) -> list[dict]:
    """Forward (TEST phase) of every variant, interleaved: the engine in float32 and bf16,
    plain and channels-last; the plain-PyTorch stacks; OpenCV DNN and pycaffe (when it
    imports) on the same weights and image. max rel diff: each `score` against OpenCV's (the
    plain stacks against the engine's float32)."""
    h, w = job["size"]
    dev = job["device"]
    img, _ = _inputs(h, w, job["seed"])
    nets: dict[str, Net] = {}
    for name, amp, cl in ENGINE_VARIANTS:
        nets[name] = _variant_net(job, "TEST", next(iter(nets.values()), None), amp, cl)
        nets[name].blobs["data"].reshape(1, 3, h, w)
    steps = {}
    for name, net in nets.items():
        def step(net=net):
            net.blobs["data"].data[...] = img
            return net.forward()["score"]
        steps[name] = step
    base = nets["engine fp32"]
    steps.update(_plain_steps(job, base, img, None))
    outs: dict[str, np.ndarray] = {}
    if job["opencv_reps"] and dev == "cpu":
        steps["opencv"] = _opencv(job, base, img, outs)
        caffe_step = _pycaffe(job, img, outs)
        if caffe_step is not None:
            steps["pycaffe"] = caffe_step
    seconds = _interleaved(steps, job["reps"], dev, f"forward {h}x{w}")
    ref = outs.get("opencv")
    scores = {}
    for name, fn in steps.items():
        out = fn() if name not in ("opencv", "pycaffe") else outs[name]
        scores[name] = out.detach().float().cpu().numpy() if torch.is_tensor(out) else np.asarray(out)
    rows = []
    for name in steps:
        against = scores["engine fp32"] if name.startswith("plain") or ref is None else ref
        diff = float(np.abs(scores[name] - against).max() / max(float(np.abs(against).max()), 1e-30))
        rows.append(dict(impl=name, device="cpu" if name in ("opencv", "pycaffe") else dev,
                         seconds=seconds[name], reps=job["reps"], rel_diff=diff))
    return rows


def _opencv(job: dict, net: Net, img: np.ndarray, outs: dict):
    """OpenCV DNN (CPU target) reading the deploy prototxt and `net`'s weights saved as a
    caffemodel; its forward step stores `score` in outs["opencv"]."""
    import cv2
    weights = Path(job["tmp"]) / f"{MODEL}-seed{job['seed']}.caffemodel"
    if not weights.exists():
        net.save(weights)
    cv = cv2.dnn.readNetFromCaffe(job["deploy"], str(weights))
    cv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def step():
        cv.setInput(img)
        outs["opencv"] = cv.forward("score")

    return step


def _pycaffe(job: dict, img: np.ndarray, outs: dict):
    """pycaffe (CPU mode) on the same files, or None when it does not import."""
    try:
        import caffe
    except ImportError:
        return None
    caffe.set_mode_cpu()
    net = caffe.Net(job["deploy"], str(Path(job["tmp"]) / f"{MODEL}-seed{job['seed']}.caffemodel"),
                    caffe.TEST)
    net.blobs["data"].reshape(*img.shape)

    def step():
        net.blobs["data"].data[...] = img
        net.forward()
        outs["pycaffe"] = net.blobs["score"].data.copy()

    return step


def _train_steps(job: dict, nets: dict[str, Net], img: np.ndarray, label: np.ndarray) -> dict:
    steps = {}
    for name, net in nets.items():
        def step(net=net):
            net.blobs["data"].data[...] = img
            net.blobs["label"].data[...] = label
            net.clear_param_diffs()
            loss = net.forward_backward()
            if not math.isfinite(loss):
                raise FcnkitError(f"{name}: non-finite loss {loss}")
        steps[name] = step
    return steps


def _train_nets(job: dict, variants) -> dict[str, Net]:
    h, w = job["size"]
    nets: dict[str, Net] = {}
    for name, amp, cl in variants:
        net = _variant_net(job, "TRAIN", next(iter(nets.values()), None), amp, cl)
        net.blobs["data"].reshape(1, 3, h, w)
        net.blobs["label"].reshape(1, 1, h, w)
        nets[name] = net
    return nets


def _train_job(job: dict) -> list[dict]:
    """forward_backward as the solver iterates (clear_param_diffs, forward_backward) of the
    engine variants (job["variants"]: names from ENGINE_VARIANTS) and, with job["plain"], the
    plain stacks, interleaved. With one variant and no plain stacks this is a memory run: the
    child's peak RSS is that variant's."""
    h, w = job["size"]
    img, label = _inputs(h, w, job["seed"])
    variants = [v for v in ENGINE_VARIANTS if v[0] in job["variants"]]
    nets = _train_nets(job, variants)
    base = _rss_now()
    steps = _train_steps(job, nets, img, label)
    if job.get("plain"):
        steps.update(_plain_steps(job, next(iter(nets.values())), img, label))
    if len(steps) == 1:
        (name, step), = steps.items()
        peaks = _Peaks(job["device"])
        _timed(step, job["warmup"], "train warm-up", job["device"], peaks)
        sec = _timed(step, job["reps"], f"forward_backward {h}x{w}", job["device"], peaks)
        return [dict(impl=name, device=job["device"], seconds=sec, reps=job["reps"],
                     rss_base=base, **peaks.result())]
    seconds = _interleaved(steps, job["reps"], job["device"], f"forward_backward {h}x{w}")
    return [dict(impl=name, device=job["device"], seconds=t, reps=job["reps"])
            for name, t in seconds.items()]


def _load_job(job: dict) -> list[dict]:
    """fp32 forward_backward of the engine and of the plain NCHW stack, alone and beside one
    CPU-bound process (a Python busy loop), interleaved round by round; rows give the mean
    seconds of each condition and the slowdown ratio."""
    h, w = job["size"]
    img, label = _inputs(h, w, job["seed"])
    nets = _train_nets(job, [v for v in ENGINE_VARIANTS if v[0] == "engine fp32"])
    steps = _train_steps(job, nets, img, label)
    steps["plain fp32"] = _plain_steps(job, nets["engine fp32"], img, label)["plain fp32"]
    peaks = _Peaks("cpu")
    for fn in steps.values():
        _once(fn, "cpu", peaks)
    seconds = {(name, busy): 0.0 for name in steps for busy in (False, True)}
    for _ in tqdm(range(job["reps"]), desc=f"under load {h}x{w}", leave=False, position=1):
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                for name, fn in steps.items():
                    seconds[name, busy] += _once(fn, "cpu", peaks)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    return [dict(impl=name, device="cpu", reps=job["reps"],
                 seconds=seconds[name, False] / job["reps"],
                 loaded=seconds[name, True] / job["reps"], policy=OMP_POLICY) for name in steps]


def worker(job: dict) -> None:
    """Child entry: run one job, print its rows as one JSON line."""
    import cv2
    torch.manual_seed(job["seed"])  # Dropout masks: the same losses run to run
    torch.set_num_threads(job["threads"])
    cv2.setNumThreads(job["threads"])
    rows = JOBS[job["kind"]](job)
    print("RESULT " + json.dumps(rows), flush=True)


JOBS = {"forward": _forward_job, "train": _train_job, "load": _load_job}


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
    loaded: float | None = None      # load rows: seconds beside a CPU-bound process
    policy: str | None = None        # load rows: the child's OMP_WAIT_POLICY
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
    Returns (rows, "") or (None, why there are none). job["env"]: environment changes
    (a None value removes the variable)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = dict(os.environ)
    for key, value in job.get("env", {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=str(REPO), env=env)
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
    float32 engine memory rows; also returns the sizes used."""
    pts = {r.size: r.rss_peak_first for r in rows
           if r.section == "memory" and r.device == "cpu" and r.impl == "engine fp32"
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
                    help="comma list of forward,train,memory,load (default: all on cpu, "
                         "forward,train on cuda)")
    ap.add_argument("--sizes", type=_csv(_size), metavar="HxW,...",
                    help="sizes for forward and train (default: 500x500 on cpu; 500x500,"
                         "2048x1024 on cuda)")
    ap.add_argument("--mem-sizes", type=_csv(_size), default=[(500, 500), (1024, 512)],
                    metavar="HxW,...", help="sizes for the memory section (default "
                                            "500x500,1024x512)")
    ap.add_argument("--load-size", type=_size, default=(320, 320), metavar="HxW",
                    help="size for the load section (default 320x320)")
    ap.add_argument("--reps", type=int, help="timed forward rounds, one call of every variant "
                    "each (default: cpu 3, cuda 10)")
    ap.add_argument("--opencv-reps", type=int,
                    help="0 leaves OpenCV and pycaffe out of the forward rounds (default: in)")
    ap.add_argument("--train-reps", type=int,
                    help="timed forward_backward rounds (default: cpu 2, cuda 5)")
    ap.add_argument("--load-reps", type=int, default=2,
                    help="rounds of the load section, each alone then loaded (default 2)")
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
    if args.device == "cuda" and {"memory", "load"} & set(args.sections):
        ap.error("the memory and load sections measure the CPU; on cuda the train rows give "
                 "CUDA peaks")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    return args


# OpenMP wait policies of the load section's children: fcnkit's (solvers/__init__.py sets
# PASSIVE unless the environment chose), and libgomp's own default (the variable unset;
# the worker imports torch before solvers, so fcnkit's default does not apply there)
POLICIES = {"fcnkit": {}, "libgomp default": {"OMP_WAIT_POLICY": None}}


def _jobs(args, files: dict, tmp: str) -> list[tuple[Row, dict]]:
    common = dict(device=args.device, threads=args.threads, seed=args.seed, tmp=tmp, **files)
    engine = [name for name, *_ in ENGINE_VARIANTS]
    jobs = []
    if "forward" in args.sections:
        for size in args.sizes:
            jobs.append((Row("forward", "", args.device, size, args.threads, args.reps),
                         dict(common, kind="forward", size=size, reps=args.reps,
                              opencv_reps=args.opencv_reps)))
    if "train" in args.sections:
        for size in args.sizes:
            jobs.append((Row("train", "", args.device, size, args.threads, args.train_reps),
                         dict(common, kind="train", size=size, reps=args.train_reps,
                              variants=[engine[0], engine[2]], plain=True)))
    if "memory" in args.sections:
        for size in sorted(args.mem_sizes, key=lambda s: s[0] * s[1]):
            for name in (engine[0], engine[2]):
                jobs.append((Row("memory", name, "cpu", size, args.threads, 1),
                             dict(common, kind="train", size=size, warmup=0, reps=1,
                                  variants=[name])))
    if "load" in args.sections:
        for policy, env in POLICIES.items():
            jobs.append((Row("load", "", "cpu", args.load_size, args.threads, args.load_reps,
                             notes=[policy]),
                         dict(common, kind="load", size=args.load_size, reps=args.load_reps,
                              env=env)))
    return jobs


def _add_rows(row: Row, results: list[dict] | None, why: str, rows: list[Row]) -> None:
    if results is None:
        row.notes.append(why)
        rows.append(row)
        return
    for res in results:
        r = Row(row.section, res["impl"], res["device"], row.size, row.threads, res["reps"],
                notes=list(row.notes))
        for key, value in res.items():
            setattr(r, key, value)
        rows.append(r)


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}e}" if 0 < abs(v) < 1e-2 else f"{v:.{digits}f}"
    return str(v)


def _ratio(r: Row, rows: list[Row]) -> float | None:
    """Seconds relative to the engine's float32 in the same section and size (same child:
    the same load on the machine)."""
    ref = next((x for x in rows if x.section == r.section and x.size == r.size
                and x.impl == "engine fp32" and x.seconds), None)
    return r.seconds / ref.seconds if ref and r.seconds and r.section != "memory" else None


def table(rows: list[Row]) -> str:
    head = ["section", "impl", "device", "size", "threads", "reps", "s/image",
            "ratio to engine fp32", "RSS base", "peak RSS 1 it", "peak RSS", "CUDA peak 1 it",
            "CUDA peak", "max rel diff", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.section == "load":
            continue
        cells = [r.section, r.impl, r.device, f"{r.size[0]}x{r.size[1]}", r.threads, r.reps,
                 _fmt(r.seconds), _fmt(_ratio(r, rows)), _fmt(r.rss_base),
                 _fmt(r.rss_peak_first), _fmt(r.rss_peak), _fmt(r.cuda_peak_first),
                 _fmt(r.cuda_peak), _fmt(r.rel_diff), "; ".join(r.notes)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def load_table(rows: list[Row]) -> str:
    load = [r for r in rows if r.section == "load"]
    if not load:
        return ""
    lines = ["| OMP_WAIT_POLICY | impl | size | rounds | s alone | s beside a busy process | "
             "slowdown |", "|---|---|---|---|---|---|---|"]
    for r in load:
        slow = r.loaded / r.seconds if r.loaded and r.seconds else None
        lines.append(f"| {r.policy or '; '.join(r.notes)} | {r.impl} | {r.size[0]}x{r.size[1]} "
                     f"| {r.reps} | {_fmt(r.seconds)} | {_fmt(r.loaded)} | {_fmt(slow)} |")
    return "\n".join(lines)


def fit_lines(rows: list[Row]) -> list[str]:
    f = fit(rows)
    if f is None:
        return []
    a, b, sizes = f
    target = 2048 * 1024
    ca, cb = CAFFE_FIT
    used = ", ".join(f"{h}x{w}" for h, w in sizes)
    return [f"- engine fp32: peak RSS of one forward_backward ≈ {a:.2f} GiB + "
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
    if any(r.section == "load" for r in rows):
        print("\nfp32 forward_backward alone and beside one CPU-bound process:\n")
        print(load_table(rows))
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          "(other work on the machine slows the timings, not the memory figures)")
    print(f"\ncommand: `{command}`")


if __name__ == "__main__":
    main()
