"""Loss and metric layers: SoftmaxWithLoss, SigmoidCrossEntropyLoss, EuclideanLoss, Accuracy.

The Net runs every layer marked `is_loss` or `full_precision` outside autocast, in at least
float32, so mixed precision never touches the objective."""
from __future__ import annotations

import torch

from .base import ENGINE, FLT_MIN, Layer, register

# LossParameter.NormalizationMode
FULL, VALID, BATCH_SIZE, NONE = range(4)
NORMALIZATION_NAMES = {FULL: "FULL", VALID: "VALID", BATCH_SIZE: "BATCH_SIZE", NONE: "NONE"}


def normalization_mode(loss_param, default: int = VALID) -> int:
    """`normalization` if set, else the legacy `normalize` flag (false -> BATCH_SIZE), else
    `default` (VALID for SoftmaxWithLoss; BATCH_SIZE for SigmoidCrossEntropyLoss in Caffe)."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return VALID if loss_param.normalize else BATCH_SIZE
    return default


def _labels(layer: Layer, scores: torch.Tensor, label: torch.Tensor, axis: int):
    """Scores as (outer, C, inner) and labels as integer (outer, inner), checking the counts."""
    outer = scores.shape[:axis].numel()
    inner = scores.shape[axis + 1:].numel()
    if label.numel() != outer * inner:
        raise layer.error(f"label count {label.numel()} (shape {tuple(label.shape)}) does not "
                          f"match predictions {tuple(scores.shape)} with class axis {axis}")
    return scores.reshape(outer, scores.shape[axis], inner), label.reshape(outer, inner).long()


def _check_range(layer: Layer, lab: torch.Tensor, valid: torch.Tensor, classes: int,
                 ignore: int | None) -> None:
    """Every counted label must be a class 0..classes-1: Caffe's DCHECK_GE/DCHECK_LT on
    label_value in SoftmaxWithLoss and Accuracy (a debug build aborts, a release build reads
    another pixel's score). Never clamped into a class here. Raises the layer's error."""
    bad = valid & ((lab < 0) | (lab >= classes))
    if bool(bad.any()):
        raise layer.error(f"label {int(lab[bad][0])} outside [0, {classes})"
                          + (" (no ignore_label set)" if ignore is None
                             else f" and not ignore_label {ignore}"))


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """Caffe's forward (-log max(p, FLT_MIN)) with its exact gradient (p - onehot) / normaliser."""

    @staticmethod
    def forward(ctx, scores, label, valid, normaliser):
        prob = torch.softmax(scores, dim=1)
        safe = torch.where(valid, label, torch.zeros_like(label))
        p_label = prob.gather(1, safe.unsqueeze(1)).squeeze(1)
        loss = -(torch.log(p_label.clamp_min(FLT_MIN)) * valid).sum() / normaliser
        ctx.save_for_backward(prob, safe, valid, normaliser)
        return loss

    @staticmethod
    def backward(ctx, grad):
        prob, safe, valid, normaliser = ctx.saved_tensors
        g = prob.clone()
        g.scatter_add_(1, safe.unsqueeze(1), -torch.ones_like(g[:, :1]))
        g *= valid.unsqueeze(1)
        return g * (grad / normaliser), None, None, None


@register
class SoftmaxWithLoss(Layer):
    """Softmax over `axis` then multinomial logistic loss, skipping ignore_label pixels and
    divided by max(1, normaliser): FULL N·H·W, VALID non-ignored count, BATCH_SIZE N, NONE 1.
    Optional top 1 is the probability map (no gradient flows back from it, as in Caffe)."""
    type = "SoftmaxWithLoss"
    bottoms = (2, 2)
    tops = (1, 2)
    is_loss = True
    fields = {"loss_param": frozenset({"ignore_label", "normalization", "normalize"}),
              "softmax_param": frozenset({"axis", ENGINE})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        lossp = lp.loss_param
        self.ignore = lossp.ignore_label if lossp.HasField("ignore_label") else None
        self.mode = normalization_mode(lossp)

    def normaliser(self, outer: int, inner: int, valid_count: torch.Tensor) -> torch.Tensor:
        n = {FULL: outer * inner, BATCH_SIZE: outer, NONE: 1}.get(self.mode)
        if n is None:
            return valid_count.to(torch.float64).clamp_min(1.0)
        return torch.tensor(max(1.0, float(n)), dtype=torch.float64, device=valid_count.device)

    def forward(self, bottoms, params, run):
        scores, label = bottoms
        axis = self.axis(self.lp.softmax_param.axis, scores.dim())
        s, lab = _labels(self, scores, label.detach(), axis)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore is None else lab != self.ignore
        if not run.meta:
            _check_range(self, lab, valid, s.shape[1], self.ignore)
        norm = self.normaliser(s.shape[0], s.shape[2], valid.sum()).to(s.dtype)
        tops = [_SoftmaxCrossEntropy.apply(s, lab, valid, norm)]
        if len(self.lp.top) == 2:
            tops.append(torch.softmax(scores.detach(), dim=axis))
        return tops


@register
class SigmoidCrossEntropyLoss(Layer):
    """-Σ [t log σ(x) + (1 - t) log(1 - σ(x))] over entries whose target, truncated to an
    integer, is not ignore_label; divided by max(1, normaliser) with outer = N and inner =
    values per item: FULL N·inner, VALID the counted entries, BATCH_SIZE N (the default when
    neither normalization nor normalize is set), NONE 1. Gradient (σ(x) - t) / normaliser."""
    type = "SigmoidCrossEntropyLoss"
    bottoms = (2, 2)
    is_loss = True
    fields = {"loss_param": frozenset({"ignore_label", "normalization", "normalize"}),
              "sigmoid_param": frozenset({ENGINE})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        lossp = lp.loss_param
        self.ignore = lossp.ignore_label if lossp.HasField("ignore_label") else None
        self.mode = normalization_mode(lossp, default=BATCH_SIZE)

    def forward(self, bottoms, params, run):
        x, target = bottoms[0], bottoms[1].detach()
        if x.dim() == 0 or target.dim() == 0 or x.shape[0] != target.shape[0]:
            raise self.error(f"bottoms {tuple(x.shape)} and {tuple(target.shape)} need the same "
                             "first (batch) dimension")
        if x.numel() != target.numel():
            raise self.error(f"bottoms {tuple(x.shape)} and {tuple(target.shape)} differ in count")
        x, target = x.reshape(x.shape[0], -1), target.reshape(x.shape[0], -1).to(x.dtype)
        # log-likelihood x t - log(1 + e^x), stable for any x, gradient t - σ(x) even at x = 0
        loglik = x * target - torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))
        if self.ignore is None:
            valid = torch.ones_like(target, dtype=torch.bool)
        else:
            valid = torch.trunc(target) != self.ignore
            loglik = torch.where(valid, loglik, torch.zeros_like(loglik))
        outer, inner = x.shape
        n = {FULL: outer * inner, BATCH_SIZE: outer, NONE: 1}.get(self.mode)
        norm = (valid.sum().to(x.dtype) if n is None else
                torch.tensor(float(n), dtype=x.dtype, device=x.device)).clamp_min(1.0)
        return [-loglik.sum() / norm]


@register
class EuclideanLoss(Layer):
    """Σ (a - b)² / (2 N), N = bottom 0's first dimension; bottoms need equal counts per item."""
    type = "EuclideanLoss"
    bottoms = (2, 2)
    is_loss = True

    def forward(self, bottoms, params, run):
        a, b = bottoms
        if a.shape[1:].numel() != b.shape[1:].numel() or a.shape[0] != b.shape[0]:
            raise self.error(f"bottoms {tuple(a.shape)} and {tuple(b.shape)} differ in size")
        diff = a.reshape(-1) - b.reshape(-1)
        return [(diff * diff).sum() / (2.0 * a.shape[0])]


@register
class Accuracy(Layer):
    """Fraction of non-ignored items whose label is among the top_k scores. As Caffe's
    accuracy_layer.cpp (since 62e0c85), a class scoring >= the label's counts as better, so
    ties go against the label: all-equal scores give accuracy 0 for C > top_k, not 1.
    Top 1, if given: per-class accuracy.
    A label outside 0..C-1 that is not ignore_label is an error (Caffe's label check)."""
    type = "Accuracy"
    bottoms = (2, 2)
    tops = (1, 2)
    full_precision = True
    fields = {"accuracy_param": frozenset({"top_k", "axis", "ignore_label"})}

    def forward(self, bottoms, params, run):
        p = self.lp.accuracy_param
        scores, label = bottoms[0].detach(), bottoms[1].detach()
        axis = self.axis(p.axis, scores.dim())
        s, lab = _labels(self, scores, label, axis)
        classes = s.shape[1]
        if p.top_k > classes:
            raise self.error(f"top_k {p.top_k} exceeds the {classes} classes")
        ignore = p.ignore_label if p.HasField("ignore_label") else None
        valid = torch.ones_like(lab, dtype=torch.bool) if ignore is None else lab != ignore
        if not run.meta:
            _check_range(self, lab, valid, classes, ignore)
        safe = torch.where(valid, lab, torch.zeros_like(lab))
        mine = s.gather(1, safe.unsqueeze(1))
        correct = ((s >= mine).sum(dim=1) <= p.top_k) & valid  # the label counts itself
        count = valid.sum()
        acc = torch.where(count > 0, correct.sum() / count.clamp_min(1), torch.zeros((), device=s.device))
        tops = [acc.to(scores.dtype)]
        if len(self.lp.top) == 2:
            onehot = torch.zeros(lab.numel(), classes, device=s.device, dtype=torch.float64)
            onehot.scatter_(1, safe.reshape(-1, 1), 1.0)
            seen = (onehot * valid.reshape(-1, 1)).sum(0)
            hit = (onehot * correct.reshape(-1, 1)).sum(0)
            tops.append((hit / seen.clamp_min(1)).to(scores.dtype))
        return tops
