"""Half-precision copies of a net's float32 parameters for mixed-precision passes.

torch.autocast casts a float32 weight to half on every call that reads it (its cast cache
lives only as long as one autocast block), so a pass over FCN-VGG16 re-casts 134 M weights
(fc6 alone is 103 M) and training holds the casts for backward anyway. Here the copy is made
once and reused until the float32 value changes: a solver update or copy_from (in-place torch
writes bump the tensor's version counter) or a numpy view handed out by Param.data (which may
be written behind that counter; Param counts them). Copies hang on the Param, so nets that
share a Param (a solver's train and test nets) share one copy.
"""
from __future__ import annotations

import weakref

import torch

from .blob import Param

# Param -> {(shape, dtype, channels_last): (stamp, copy)}; entries go with their Param
_COPIES: "weakref.WeakKeyDictionary[Param, dict]" = weakref.WeakKeyDictionary()


class _FromMaster(torch.autograd.Function):
    """Forward: the cached half copy of `master`; backward: its gradient in master's dtype
    (plain contiguous layout), so parameter gradients accumulate in float32."""

    @staticmethod
    def forward(ctx, master: torch.Tensor, copy: torch.Tensor) -> torch.Tensor:
        ctx.dtype = master.dtype
        return copy.view_as(copy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.to(ctx.dtype, memory_format=torch.contiguous_format), None


def half_weight(param: Param, shape: tuple[int, ...], dtype: torch.dtype,
                channels_last: bool) -> torch.Tensor:
    """`param` viewed as `shape` (the layer's view of a legacy or shared blob) in `dtype`
    (bfloat16/float16), channels-last when 4-D and asked for. Differentiable: under grad mode
    the gradient flows to param.tensor in its own dtype."""
    master = param.tensor
    cl = channels_last and len(shape) == 4
    key = (tuple(shape), dtype, cl)
    stamp = (master._version, param.exposed, master.device)
    copies = _COPIES.setdefault(param, {})
    entry = copies.get(key)
    if entry is None or entry[0] != stamp:
        fmt = torch.channels_last if cl else torch.contiguous_format
        with torch.no_grad():
            copy = master.detach().view(shape).to(dtype, memory_format=fmt)
        entry = copies[key] = (stamp, copy)
    copy = entry[1]
    if torch.is_grad_enabled() and master.requires_grad:
        view = master if tuple(master.shape) == tuple(shape) else master.view(shape)
        return _FromMaster.apply(view, copy)
    return copy
