"""Caffe's solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) driving an engine Net.

One iteration is Caffe's Solver::Step body: clear parameter gradients; test when
test_interval says so; forward/backward iter_size times (gradients summed, loss averaged);
then SGDSolver::ApplyUpdate: rate from the lr policy, clip the summed gradients by their
global L2 norm (clip_gradients), scale by 1/iter_size, add weight_decay x decay_mult x w (L2)
or x sign(w) (L1), compute the solver type's update with local rate = rate x lr_mult into
the gradient buffer, and subtract it from the weights. Scalars (1/iter_size, local rate and
decay) are rounded to float32 as Caffe holds them. The iteration count then increases,
snapshots are written every `snapshot` iterations, and SIGINT/SIGHUP requests are honoured
(see signals.py).

Failures: a non-finite loss (or gradient) stops training with FcnkitError before the weights
are touched, naming the last snapshot written; snapshot() refuses to write non-finite weights
or history, so a good snapshot is never replaced by a diverged one.

Mixed precision (amp="bf16" | "fp16"): the nets run their layers under torch.autocast in
that type; loss layers run in float32 on float32 copies of their inputs (so the FCN recipes'
unnormalised losses of ~1e5 are summed in full precision); parameters, gradients as stored,
history and the whole update stay float32; convolutions read a half copy of their weights,
cast after each update (not on every pass) and shared by the train and test nets (see
solvers/engine/half_weights.py), on channels-last activations. bf16 has float32's range and
needs nothing else.
fp16 uses a dynamic loss scale: the objective's gradient is multiplied by a power of two
(first 2^16), and parameter gradients are divided by it before clipping and the update. When
any gradient comes out inf/NaN the iteration is redone on the next batch with half the scale
(no update, iteration count unchanged: the same trade torch.cuda.amp.GradScaler makes), so
the scale settles where the gradients fit fp16 (far below 1 for unnormalised FCN losses, whose
weight gradients reach ~1e8); after 2000 clean iterations the scale doubles again. The scale
is not part of the solverstate; a resumed fp16 run starts again at 2^16.

Data parallel: see replicas.py (torch.distributed; gradients averaged as Caffe's multi-GPU
solver, rank 0 tests and snapshots).
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from netgen.errors import FcnkitError
from netgen.proto import caffe_pb2

from .lr_policy import learning_rate
from .net import AMP_DTYPES, Net
from .replicas import Replicas
from .signals import NONE, SNAPSHOT, STOP, Requests
from .snapshot import (SolverState, check_history_shapes, read_solverstate, snapshot_filename,
                       write_solverstate)
from .solver_setup import NetSpec, load_solver
from .update_rules import SOLVER_TYPES

log = logging.getLogger(__name__)

IterCallback = Callable[[int, float, float, float], object]
TestCallback = Callable[[int, int, dict], object]
WeightsSource = str | os.PathLike | Mapping


def _f32(x: float) -> float:
    return float(np.float32(x))


class _LossScale:
    """fp16 dynamic loss scaling (see module docstring); a fixed 1 otherwise."""

    INITIAL, GROWTH_INTERVAL, SMALLEST = 2.0 ** 16, 2000, 2.0 ** -64

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.scale = self.INITIAL if enabled else 1.0
        self._clean = 0

    def overflowed(self) -> None:
        self.scale /= 2
        self._clean = 0
        if self.scale < self.SMALLEST:
            raise FcnkitError("fp16 gradients stay non-finite at any loss scale: the net "
                              "diverged or overflows fp16 in its forward pass; try amp bf16")

    def clean_iteration(self) -> None:
        if self.enabled:
            self._clean += 1
            if self._clean == self.GROWTH_INTERVAL:
                self.scale *= 2
                self._clean = 0


class Solver:
    """Caffe's Solver on fcnkit's engine.

    Solver(solver_param | path, *, device="cpu", weights=None, train_net_param=None,
           amp=None, allow_python_modules=False)

    weights: a caffemodel path, a Weights mapping, or a list of them, loaded into the train
    net after the solver's own `weights` entries (Caffe's --weights). train_net_param replaces
    the train net the solver names. Attributes: net (train Net), test_nets (root process only),
    param (SolverParameter, legacy solver_type upgraded), type, iter, current_step,
    smoothed_loss, history (torch tensors, Caffe's order), snapshot_prefix, last_snapshot,
    requested_early_exit, rank / world_size.
    """

    def __init__(self, solver: caffe_pb2.SolverParameter | str | os.PathLike, *,
                 device: str | torch.device = "cpu",
                 weights: WeightsSource | Sequence[WeightsSource] | None = None,
                 train_net_param: caffe_pb2.NetParameter | None = None,
                 amp: str | None = None, allow_python_modules: bool = False):
        if amp not in AMP_DTYPES:
            raise FcnkitError(f"amp must be 'bf16', 'fp16' or None, got {amp!r}")
        self.replicas = Replicas(device)
        setup = load_solver(solver, train_net_param=train_net_param, root=self.replicas.root)
        self.param = setup.param
        self.type = setup.type
        self.source = setup.source
        self.snapshot_prefix = setup.snapshot_prefix
        self._check_snapshot_folder()
        if self.param.random_seed >= 0:  # Caffe seeds each solver with random_seed + rank
            torch.manual_seed(self.param.random_seed + self.replicas.rank)
        self._net_options = dict(device=device, amp=amp, allow_python_modules=allow_python_modules)
        self.net = self._build(setup.train)
        self.test_nets = [self._build(spec) for spec in setup.tests]
        for source in setup.weights + _as_list(weights):
            self.net.copy_from(source)
        for test_net in self.test_nets:
            test_net.share_weights(self.net)
        self._params = self.net.learnable_params()
        self._rule, self._slots, _ = SOLVER_TYPES[self.type]
        self.history = [torch.zeros_like(p.tensor.detach()) for _ in range(self._slots)
                        for p in self._params]
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = 0.0
        self._losses: list[float] = []
        self._scale = _LossScale(amp == "fp16")
        self._requests = Requests()
        self._synced = False
        self.requested_early_exit = False
        self.last_snapshot: tuple[str, str] | None = None

    # ------------------------------------------------------------------------------ setup
    @property
    def rank(self) -> int:
        return self.replicas.rank

    @property
    def world_size(self) -> int:
        return self.replicas.size

    def _build(self, spec: NetSpec) -> Net:
        try:
            return Net(spec.param, spec.phase, stages=spec.stages, level=spec.level,
                       **self._net_options)
        except FcnkitError as e:
            raise FcnkitError(f"{self.source}: {spec.source}: {e}") from None

    def _check_snapshot_folder(self) -> None:
        """Fail now, not after hours of training (Caffe's CheckSnapshotWritePermissions)."""
        if not self.replicas.root or not (self.param.snapshot or self.param.snapshot_after_train):
            return
        folder = Path(self.snapshot_prefix).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise FcnkitError(f"{self.source}: snapshot_prefix {self.param.snapshot_prefix!r}: "
                              f"folder {folder} does not exist or is not writable")

    # ------------------------------------------------------------------------------ running
    def request(self, action: str) -> None:
        """Ask for "snapshot" or "stop" after the current iteration (as a signal would)."""
        self._requests.request(action)

    def handling_signals(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot"):
        """Context manager routing SIGINT/SIGHUP to requests, for callers that drive step()
        themselves (solve() does this on its own): after a stop, step() returns with
        requested_early_exit set, between iterations, never mid-update."""
        return self._requests.handling_signals(sigint_effect, sighup_effect)

    def solve(self, resume: str | os.PathLike | None = None, *,
              callback: IterCallback | None = None, on_test: TestCallback | None = None,
              sigint_effect: str = "stop", sighup_effect: str = "snapshot") -> None:
        """Train to max_iter (Caffe's Solver::Solve), resuming from a solverstate if given.

        SIGINT/SIGHUP are handled meanwhile with Caffe's effects; a stop ends training
        cleanly (requested_early_exit is then True) after the snapshot_after_train snapshot.
        """
        self.requested_early_exit = False
        if resume is not None:
            self.restore(resume)
        log.info("Solving %s, learning rate policy: %s", self.net.net_param.name,
                 self.param.lr_policy)
        with self.handling_signals(sigint_effect, sighup_effect):
            start_iter = self.iter
            self.step(self.param.max_iter - self.iter, callback=callback, on_test=on_test)
            if self.replicas.root and self.param.snapshot_after_train and (
                    not self.param.snapshot or self.iter % self.param.snapshot):
                self.snapshot()
            if self.requested_early_exit:
                log.info("Optimization stopped early.")
                return
            if self.param.display and self.iter % self.param.display == 0:
                with torch.no_grad():
                    self.net.forward()
                self._update_smoothed_loss(_weighted_loss(self.net), start_iter)
                log.info("Iteration %d, loss = %g", self.iter, self.smoothed_loss)
            if self.param.test_interval and self.iter % self.param.test_interval == 0:
                self.test_all(on_test)
        log.info("Optimization Done.")

    def step(self, iters: int, callback: IterCallback | None = None,
             on_test: TestCallback | None = None) -> None:
        """Run `iters` iterations (Caffe's Solver::Step).

        callback(iter, loss, smoothed_loss, lr) follows every iteration's update; `iter` is
        the number of the iteration just done as Caffe logs it (solver.iter is then iter + 1),
        loss its loss averaged over iter_size, lr the policy rate it used. on_test(iter,
        test_net_id, mean_scores) follows every test (mean_scores: output -> array).
        """
        start_iter, stop_iter = self.iter, self.iter + iters
        self._losses, self.smoothed_loss = [], 0.0
        self._sync_replicas()
        timer, last_iter = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            if self._test_due():
                if self.replicas.root:
                    self.test_all(on_test)
                stop = self.replicas.agree(STOP if self.requested_early_exit else NONE)
                if stop == STOP:
                    self.requested_early_exit = True
                    break
            loss = self._forward_backward()
            self._update_smoothed_loss(loss, start_iter)
            display = self.param.display and self.iter % self.param.display == 0
            if display and self.replicas.root:
                lapse = time.perf_counter() - timer
                log.info("Iteration %d (%.4g iter/s, %.4gs/%d iters), loss = %g", self.iter,
                         (self.iter - last_iter) / (lapse or 1), lapse, self.param.display,
                         self.smoothed_loss)
                self._log_outputs()
                timer, last_iter = time.perf_counter(), self.iter
            rate = self._apply_update(display)
            self.iter += 1
            if callback is not None:
                callback(self.iter - 1, loss, self.smoothed_loss, rate)
            action = self.replicas.agree(self._requests.take())
            if self.replicas.root and (action == SNAPSHOT or (
                    self.param.snapshot and self.iter % self.param.snapshot == 0)):
                self.snapshot()
            if action == STOP:
                self.requested_early_exit = True
                break

    def _test_due(self) -> bool:
        p = self.param
        return bool(p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization))

    def _sync_replicas(self) -> None:
        if self.replicas.parallel and not self._synced:
            self.replicas.broadcast([p.tensor for p in self._params] + self.history)
        self._synced = True

    def _gradients(self) -> list[torch.Tensor]:
        """Every learnable param's gradient buffer (zeros for params without one, e.g. lr_mult 0)."""
        grads = []
        for p in self._params:
            if p.tensor.grad is None:
                p.tensor.grad = torch.zeros_like(p.tensor.detach())
            grads.append(p.tensor.grad)
        return grads

    def _forward_backward(self) -> float:
        """iter_size forward/backward passes; gradients reduced over processes and unscaled."""
        n = self.param.iter_size
        while True:
            self.net.clear_param_diffs()
            loss = sum(self.net.forward_backward(scale=self._scale.scale) for _ in range(n)) / n
            grads = self._gradients()
            total = self.replicas.reduce_gradients(
                [g for g, p in zip(grads, self._params) if p.tensor.requires_grad], loss)
            if not math.isfinite(total):
                self._diverged(f"loss is {loss if not math.isfinite(loss) else total}")
            if _all_finite(grads):
                break
            if not self._scale.enabled:
                self._diverged("gradients are not finite")
            self._scale.overflowed()
            log.info("fp16 gradients overflowed at iteration %d: loss scale now %g", self.iter,
                     self._scale.scale)
        if self._scale.scale != 1.0:
            with torch.no_grad():
                for g in grads:
                    g.mul_(1.0 / self._scale.scale)
        self._scale.clean_iteration()
        return loss

    def _diverged(self, what: str) -> None:
        last = (f"last good snapshot: {self.last_snapshot[0]} + {self.last_snapshot[1]}"
                if self.last_snapshot else "no snapshot was written")
        raise FcnkitError(f"iteration {self.iter}: {what}; training diverged, stopped before "
                          f"updating the weights ({last})")

    def _apply_update(self, display: bool = False) -> float:
        """SGDSolver::ApplyUpdate: returns the policy rate used."""
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        if display and self.replicas.root:
            log.info("Iteration %d, lr = %g", self.iter, rate)
        grads = self._gradients()
        p = self.param
        with torch.no_grad():
            self._clip(grads)
            n = len(self._params)
            for i, (param, g) in enumerate(zip(self._params, grads)):
                if p.iter_size > 1:
                    g.mul_(_f32(1.0 / p.iter_size))
                decay = _f32(p.weight_decay * param.decay_mult)
                w = param.tensor.detach()
                if decay:
                    g.add_(w if p.regularization_type == "L2" else torch.sign(w), alpha=decay)
                slots = [self.history[k * n + i] for k in range(self._slots)]
                self._rule(g, slots, _f32(rate * param.lr_mult), p, self.iter)
                w.sub_(g)
        return rate

    def _clip(self, grads: list[torch.Tensor]) -> None:
        clip = self.param.clip_gradients
        if clip < 0 or not grads:
            return
        norm = float(torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt())
        if norm > clip:
            scale = _f32(clip / norm)
            log.info("Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale "
                     "factor %g", norm, clip, scale)
            for g in grads:
                g.mul_(scale)

    def _update_smoothed_loss(self, loss: float, start_iter: int) -> None:
        """Caffe's UpdateSmoothedLoss: running mean of the last average_loss losses."""
        window = self.param.average_loss
        if len(self._losses) < window:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self.iter - start_iter) % window
            self.smoothed_loss += (loss - self._losses[idx]) / window
            self._losses[idx] = loss

    def _log_outputs(self) -> None:
        weights = {top: w for rec in self.net.layers for top, w in zip(rec.tops, rec.loss_weights)}
        k = 0
        for name in self.net.outputs:
            w = weights.get(name, 0.0)
            for value in np.atleast_1d(self.net.blobs[name].data).reshape(-1):
                extra = f" (* {w:g} = {w * value:g} loss)" if w else ""
                log.info("    Train net output #%d: %s = %g%s", k, name, value, extra)
                k += 1

    # ------------------------------------------------------------------------------ testing
    def test_all(self, on_test: TestCallback | None = None) -> list[dict[str, np.ndarray]]:
        """Run every test net test_iter times; returns each net's mean outputs (Caffe's
        TestAll). Stops early (returning what finished) if a stop is requested meanwhile."""
        results = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            scores = self.test(i)
            if scores is None:
                break
            results.append(scores)
            if on_test is not None:
                on_test(self.iter, i, scores)
        return results

    def test(self, test_net_id: int = 0) -> dict[str, np.ndarray] | None:
        """Mean of each output of test net `test_net_id` over test_iter forward passes
        (None when a stop request interrupts it)."""
        net, n = self.test_nets[test_net_id], self.param.test_iter[test_net_id]
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        sums: dict[str, np.ndarray] = {}
        loss = 0.0
        for _ in range(n):
            while (action := self._requests.take()) != NONE:
                if action == SNAPSHOT:
                    self.snapshot()
                else:
                    self.requested_early_exit = True
            if self.requested_early_exit:
                log.info("Test interrupted.")
                return None
            with torch.no_grad():
                outputs = net.forward()
            if self.param.test_compute_loss:
                loss += _weighted_loss(net)
            for name, value in outputs.items():
                sums[name] = sums.get(name, 0.0) + np.asarray(value, dtype=np.float64)
        if self.param.test_compute_loss:
            log.info("Test loss: %g", loss / n)
        weights = {top: w for rec in net.layers for top, w in zip(rec.tops, rec.loss_weights)}
        means = {name: (total / n).astype(np.float32) for name, total in sums.items()}
        k = 0
        for name, mean in means.items():
            w = weights.get(name, 0.0)
            for value in np.atleast_1d(mean).reshape(-1):
                extra = f" (* {w:g} = {w * value:g} loss)" if w else ""
                log.info("    Test net output #%d: %s = %g%s", k, name, value, extra)
                k += 1
        return means

    # ------------------------------------------------------------------------------ snapshots
    def snapshot_paths(self, it: int | None = None) -> tuple[str, str]:
        """(caffemodel, solverstate) paths a snapshot at iteration `it` (default now) gets."""
        it = self.iter if it is None else it
        h5 = ".h5" if self._hdf5 else ""
        return (snapshot_filename(self.snapshot_prefix, it, ".caffemodel" + h5),
                snapshot_filename(self.snapshot_prefix, it, ".solverstate" + h5))

    @property
    def _hdf5(self) -> bool:
        return self.param.snapshot_format == self.param.HDF5

    def snapshot(self) -> tuple[str, str]:
        """Write <prefix>_iter_<N>.caffemodel[.h5] then its .solverstate[.h5], each atomically.

        Refuses (FcnkitError, nothing written) when weights or history are not finite.
        """
        if not self.replicas.root:
            raise FcnkitError("only rank 0 writes snapshots")
        if not _all_finite([p.tensor.detach() for p in self._params] + self.history):
            raise FcnkitError(f"iteration {self.iter}: weights or solver history are not "
                              "finite; not writing a snapshot over good ones")
        model, state = self.snapshot_paths()
        log.info("Snapshotting to %s file %s", "HDF5" if self._hdf5 else "binary proto", model)
        self.net.save(model, format="hdf5" if self._hdf5 else "binary")
        log.info("Snapshotting solver state to %s file %s", "HDF5" if self._hdf5 else
                 "binary proto", state)
        write_solverstate(state, SolverState(
            iter=self.iter, learned_net=model, current_step=self.current_step,
            history=[h.detach().to("cpu", torch.float32).numpy() for h in self.history]))
        self.last_snapshot = (model, state)
        return model, state

    def restore(self, path: str | os.PathLike) -> None:
        """Continue from a .solverstate / .solverstate.h5: iteration, lr-policy step, history,
        and the weights of the caffemodel it names (Caffe's Solver::Restore)."""
        state = read_solverstate(path)
        history = check_history_shapes(state.history, [tuple(h.shape) for h in self.history],
                                       str(path))
        if state.learned_net:
            self.net.copy_from(_find_learned_net(state.learned_net, Path(path)))
        with torch.no_grad():
            for h, saved in zip(self.history, history):
                h.copy_(torch.from_numpy(saved))
        self.iter, self.current_step = state.iter, state.current_step
        self._synced = False
        if state.learned_net:
            self.last_snapshot = (state.learned_net, str(path))


def _as_list(weights) -> list:
    if weights is None:
        return []
    if isinstance(weights, (str, os.PathLike, Mapping)):
        return [weights]
    return list(weights)


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """One reduction: any inf/NaN makes the total non-finite (finite values overflowing
    float32's 3e38 would be a divergence too). A float64 sum costs ~6x more on CPU."""
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack([t.sum() for t in tensors]).sum()))


def _weighted_loss(net: Net) -> float:
    """Σ loss_weight · sum(top) of the last forward (Caffe's Forward(&loss))."""
    return sum(w * float(net.blobs[top].data.sum(dtype=np.float64))
               for rec in net.layers for top, w in zip(rec.tops, rec.loss_weights) if w)


def _find_learned_net(learned_net: str, state_path: Path) -> Path:
    """The caffemodel a solverstate names: as written (absolute or from the working folder),
    else beside the solverstate (snapshot folders get moved)."""
    named = Path(learned_net)
    candidates = [named, state_path.parent / named.name]
    if not named.is_absolute():
        candidates.insert(1, state_path.parent / named)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FcnkitError(f"{state_path}: learned_net {learned_net!r} not found (looked at "
                      f"{', '.join(str(c) for c in candidates)})")
