"""Shared pieces of the solver tests: a deterministic Python data layer, a two-layer linear
regression net whose gradients numpy can compute, and numpy transcriptions of Caffe's update
formulas (written from the formulas, independently of solvers.engine)."""
from __future__ import annotations

import ast
import math
import time
from pathlib import Path

import numpy as np

from netgen.proto import caffe_pb2
from netgen.schema import parse_prototxt
from solvers.engine.pylayer import Layer

HERE = Path(__file__).resolve().parent


def batches(seed: int, count: int, batch: int, dim: int, out: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fixed (data, target) batches CycleData cycles through."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, dim)).astype(np.float32),
             rng.standard_normal((batch, out)).astype(np.float32)) for _ in range(count)]


class CycleData(Layer):
    """Python data layer: tops data (batch x dim) and target (batch x out) cycling through
    `count` fixed batches; `rows` picks a slice of each batch (data-parallel shares);
    `nan_at` poisons the data of that call; `sleep` slows each forward (signal tests)."""

    def setup(self, bottom, top):
        p = ast.literal_eval(self.param_str)
        self.batches = batches(p.get("seed", 0), p.get("count", 3), p["batch"], p["dim"], p["out"])
        lo, hi = p.get("rows", (0, p["batch"]))
        self.batches = [(x[lo:hi], t[lo:hi]) for x, t in self.batches]
        self.nan_at = p.get("nan_at", -1)
        self.sleep = p.get("sleep", 0.0)
        self.counter = 0

    def reshape(self, bottom, top):
        x, t = self.batches[0]
        top[0].reshape(*x.shape)
        top[1].reshape(*t.shape)

    def forward(self, bottom, top):
        x, t = self.batches[self.counter % len(self.batches)]
        top[0].data[...] = np.nan if self.counter == self.nan_at else x
        top[1].data[...] = t
        self.counter += 1
        if self.sleep:
            time.sleep(self.sleep)

    def backward(self, top, propagate_down, bottom):
        pass


def linear_net_text(batch=4, dim=5, hidden=4, out=3, count=3, seed=0, bias_lr=2.0,
                    bias_decay=0.0, loss_weight=1.0, **data_options) -> str:
    """data -> ip1 (hidden) -> ip2 (out) -> EuclideanLoss vs target; biases lr_mult 2,
    decay_mult 0 as in the FCN/VGG recipes. data_options go to CycleData (rows, nan_at, sleep)."""
    param_str = repr(dict(seed=seed, count=count, batch=batch, dim=dim, out=out, **data_options))
    ip = lambda name, bottom, n: f"""
layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: {bias_lr} decay_mult: {bias_decay} }}
  inner_product_param {{ num_output: {n}
    weight_filler {{ type: "gaussian" std: 0.3 }} bias_filler {{ type: "uniform" min: -0.5 max: 0.5 }} }} }}"""
    return f"""name: "linreg"
layer {{ name: "data" type: "Python" top: "data" top: "target"
  python_param {{ module: "solver_helpers" layer: "CycleData" param_str: "{param_str}" }} }}
{ip("ip1", "data", hidden)}
{ip("ip2", "ip1", out)}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "target" top: "loss"
  loss_weight: {loss_weight} }}
"""


def net_param(text: str) -> caffe_pb2.NetParameter:
    return parse_prototxt(text, caffe_pb2.NetParameter, "<test net>")


def solver_param(text: str, overrides: str = "") -> caffe_pb2.SolverParameter:
    """The solver in `text`; singular fields set in `overrides` replace those in `text`."""
    param = parse_prototxt(text, caffe_pb2.SolverParameter, "<test solver>")
    param.MergeFrom(parse_prototxt(overrides, caffe_pb2.SolverParameter, "<test overrides>"))
    return param


# ------------------------------------------------------------------ numpy reference of a step

def linear_grads(ws: list[np.ndarray], x: np.ndarray, t: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """Loss and gradients of the linear net (float64): L = Σ (y - t)² / 2N."""
    w1, b1, w2, b2 = ws
    h = x @ w1.T + b1
    y = h @ w2.T + b2
    n = x.shape[0]
    loss = float(((y - t) ** 2).sum() / (2 * n))
    dy = (y - t) / n
    dh = dy @ w2
    return loss, [dh.T @ x, dh.sum(0), dy.T @ h, dy.sum(0)]


def np_sgd(g, hist, lr, p, it):
    hist[0] = p.momentum * hist[0] + lr * g
    return hist[0].copy()


def np_nesterov(g, hist, lr, p, it):
    old = hist[0].copy()
    hist[0] = p.momentum * hist[0] + lr * g
    return (1 + p.momentum) * hist[0] - p.momentum * old


def np_adagrad(g, hist, lr, p, it):
    hist[0] = hist[0] + g * g
    return lr * g / (np.sqrt(hist[0]) + p.delta)


def np_rmsprop(g, hist, lr, p, it):
    hist[0] = p.rms_decay * hist[0] + (1 - p.rms_decay) * g * g
    return lr * g / (np.sqrt(hist[0]) + p.delta)


def np_adadelta(g, hist, lr, p, it):
    m = p.momentum
    hist[0] = m * hist[0] + (1 - m) * g * g
    step = g * np.sqrt((hist[1] + p.delta) / (hist[0] + p.delta))
    hist[1] = m * hist[1] + (1 - m) * step * step
    return lr * step


def np_adam(g, hist, lr, p, it):
    b1, b2, t = p.momentum, p.momentum2, it + 1
    hist[0] = b1 * hist[0] + (1 - b1) * g
    hist[1] = b2 * hist[1] + (1 - b2) * g * g
    return lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * hist[0] / (np.sqrt(hist[1]) + p.delta)


NUMPY_RULES = {"SGD": (np_sgd, 1), "Nesterov": (np_nesterov, 1), "AdaGrad": (np_adagrad, 1),
               "RMSProp": (np_rmsprop, 1), "AdaDelta": (np_adadelta, 2), "Adam": (np_adam, 2)}


def np_rate(p, it: int) -> float:
    """The few policies the end-to-end tests use, from their formulas."""
    if p.lr_policy == "fixed":
        return p.base_lr
    if p.lr_policy == "step":
        return p.base_lr * p.gamma ** (it // p.stepsize)
    if p.lr_policy == "multistep":
        return p.base_lr * p.gamma ** sum(it >= v for v in p.stepvalue)
    raise ValueError(p.lr_policy)


def np_train(p, ws, lr_mults, decay_mults, data, iters, start_it=0, hist=None):
    """Caffe's iteration in numpy float64: accumulate iter_size batches, clip, normalise,
    regularise, rule, subtract. `data` yields (x, t) batches in order. Returns weights, losses."""
    rule, slots = NUMPY_RULES[p.type]
    ws = [w.astype(np.float64) for w in ws]
    hist = hist or [[np.zeros_like(w) for w in ws] for _ in range(slots)]
    losses = []
    for it in range(start_it, start_it + iters):
        total = [np.zeros_like(w) for w in ws]
        loss = 0.0
        for _ in range(p.iter_size):
            x, t = next(data)
            l, gs = linear_grads(ws, x.astype(np.float64), t.astype(np.float64))
            loss += l
            total = [a + g for a, g in zip(total, gs)]
        losses.append(loss / p.iter_size)
        if p.clip_gradients >= 0:
            norm = math.sqrt(sum((g ** 2).sum() for g in total))
            if norm > p.clip_gradients:
                total = [g * (p.clip_gradients / norm) for g in total]
        rate = np_rate(p, it)
        for i, (w, g) in enumerate(zip(ws, total)):
            g = g / p.iter_size
            decay = p.weight_decay * decay_mults[i]
            g = g + decay * (w if p.regularization_type == "L2" else np.sign(w))
            mine = [h[i] for h in hist]
            update = rule(g, mine, rate * lr_mults[i], p, it)
            for k in range(slots):  # the rules rebind list items: write them back
                hist[k][i] = mine[k]
            ws[i] = w - update
    return ws, losses, hist
