"""Layers that bring values into the net: Input, DummyData, Python (pycaffe's Python layers).

Input and Python tops are host blobs (CPU, numpy-writable): forward() returns their host
tensors and the net copies them to its device. Python layers are resolved through fcnkit's data layers
(solvers.data.layers); other modules are imported only with allow_python_modules=True. A Python
layer sees exactly pycaffe's interface (..pylayer): what fails in Caffe fails here.
"""
from __future__ import annotations

import importlib
from typing import Any

import torch

from netgen.errors import FcnkitError, error_like

from ..blob import Blob
from ..pylayer import BoolVec, PyBlob, RawBlobVec, make_layer
from .base import Layer, ParamInit, register

SHAPE_FIELDS = ("num", "channels", "height", "width")


def _per_top(layer: Layer, what: str, items: list, n_top: int) -> list:
    """Caffe's rule for per-top settings: one for all tops, or exactly one per top."""
    if len(items) == 1:
        return items * n_top
    if len(items) != n_top:
        raise layer.error(f"{what}: give 1 or {n_top} (one per top), got {len(items)}")
    return items


@register
class Input(Layer):
    """Net inputs: host blobs of the shapes given (one shape for all tops, or one per top)."""
    type = "Input"
    bottoms = (0, 0)
    tops = (1, None)
    host_tops = True
    fields = {"input_param": frozenset({"shape"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        shapes = [tuple(int(d) for d in s.dim) for s in lp.input_param.shape]
        if not shapes:
            raise self.error("input_param.shape is missing")
        self.shapes = _per_top(self, "input_param.shape", shapes, len(lp.top))
        if any(d < 0 for s in self.shapes for d in s):
            raise self.error(f"negative dimension in {self.shapes}")

    def initial_shapes(self) -> list[tuple[int, ...]]:
        return self.shapes

    def attach(self, tops: list[Blob]) -> None:
        self.top_blobs = tops

    def forward(self, bottoms, params, run):
        return [t.tensor for t in self.top_blobs]


@register
class DummyData(Layer):
    """Tops filled by fillers (default constant 0); constant ones are made once, others anew
    at every forward, as Caffe's refill rule."""
    type = "DummyData"
    bottoms = (0, 0)
    tops = (1, None)
    fields = {"dummy_data_param": frozenset({"data_filler", "shape"} | set(SHAPE_FIELDS))}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.dummy_data_param
        n = len(lp.top)
        legacy = [list(getattr(p, f)) for f in SHAPE_FIELDS]
        if p.shape and any(legacy):
            raise self.error("give dummy_data_param.shape or num/channels/height/width, not both")
        if p.shape:
            self.shapes = _per_top(self, "dummy_data_param.shape",
                                   [tuple(int(d) for d in s.dim) for s in p.shape], n)
        elif all(legacy):
            cols = [_per_top(self, f"dummy_data_param.{f}", v, n) for f, v in zip(SHAPE_FIELDS, legacy)]
            self.shapes = [tuple(int(c[i]) for c in cols) for i in range(n)]
        else:
            raise self.error("needs dummy_data_param.shape (or all of num, channels, height, width)")
        fillers = list(p.data_filler)
        self.fillers = _per_top(self, "dummy_data_param.data_filler", fillers, n) if fillers else [None] * n
        self._cache: dict[int, torch.Tensor] = {}

    def forward(self, bottoms, params, run):
        tops = []
        for i, (shape, filler) in enumerate(zip(self.shapes, self.fillers)):
            if run.meta:
                tops.append(torch.empty(shape, dtype=run.dtype, device="meta"))
                continue
            constant = filler is None or filler.type == "constant"
            if constant and i in self._cache:
                tops.append(self._cache[i])
                continue
            t = ParamInit(shape, filler).make(f"layer {self.name!r} dummy_data_param.data_filler",
                                              self.ctx.rng)
            t = t.to(device=run.device, dtype=run.dtype)
            if constant:
                self._cache[i] = t
            tops.append(t)
        return tops


def _resolve_python(layer: Layer, module: str, name: str) -> type:
    """The class for python_param {module, layer}: fcnkit's data layers first; other modules
    only when the caller allows importing arbitrary code."""
    from solvers.data.layers import DATA_LAYERS   # imported on first use: it pulls in readers

    if f"{module}.{name}" in DATA_LAYERS:
        return DATA_LAYERS[f"{module}.{name}"]
    if not layer.ctx.allow_python_modules:
        raise layer.error(f"python_param {module}.{name} is not one of fcnkit's data layers "
                          f"({', '.join(sorted(DATA_LAYERS))}); "
                          "pass allow_python_modules=True to import arbitrary modules")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise layer.error(f"cannot load python_param {module}.{name}: {e}") from None


class _PythonFunction(torch.autograd.Function):
    """Runs a pycaffe layer's forward/backward on host copies of the bottoms and tops."""

    @staticmethod
    def forward(ctx, impl: "Python", *xs):
        impl.run_on_host(xs)
        ctx.impl, ctx.device = impl, xs[0].device
        return tuple(t.tensor.to(xs[0].device, copy=True) for t in impl.top_blobs)

    @staticmethod
    def backward(ctx, *grads):
        impl = ctx.impl
        for blob, g in zip(impl.top_blobs, grads):
            blob.diff = 0.0 if g is None else g.detach().cpu().numpy()
        for blob in impl.bottom_blobs:
            blob.diff = 0.0
        propagate_down = BoolVec([True] * len(impl.bottom_blobs))
        impl._call("backward", impl.top_vec(), propagate_down, impl.bottom_vec())
        # copies: the layer rewrites its host diff buffers on the next backward
        return (None,) + tuple(torch.tensor(b.diff, device=ctx.device) for b in impl.bottom_blobs)


@register
class Python(Layer):
    """A pycaffe Python layer: built as cls(param), param_str and phase set, then setup and
    reshape when the net is made, reshape + forward at every forward, backward(top,
    propagate_down, bottom); bottom/top are pycaffe's RawBlobVec of Blob views (..pylayer).

    Layers without bottoms (data layers) write host tops, copied to the device per forward.
    Layers with bottoms (allowed modules only) see host copies of their bottoms; backward()
    is called with the top diffs and must fill the bottom diffs. An exception the layer
    raises comes out as a FcnkitError naming the layer that is also of the layer's exception
    class (pycaffe lets the layer's own exception through).
    """
    type = "Python"
    bottoms = (0, None)
    tops = (0, None)
    host_tops = True
    fields = {"python_param": frozenset({"module", "layer", "param_str", "share_in_parallel"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.python_param
        if not p.module or not p.layer:
            raise self.error("python_param needs module and layer")
        cls = _resolve_python(self, p.module, p.layer)
        try:
            self.obj: Any = make_layer(cls, f"{p.module}.{p.layer}")
        except FcnkitError as e:
            raise error_like(type(e), f"layer {self.name!r} ({self.type}): {e}") from None
        except Exception as e:
            raise error_like(type(e), f"layer {self.name!r} ({self.type}): {cls.__name__}(param) "
                                      f"failed: {type(e).__name__}: {e}") from e
        self.obj.param_str = p.param_str
        self.obj.phase = 0 if ctx.phase == "TRAIN" else 1
        self._set_up = False
        self.bottom_blobs = [Blob(f"{self.name}.bottom{i}", torch.zeros(0, dtype=ctx.dtype), host=True)
                             for i in range(len(lp.bottom))]

    def initial_shapes(self) -> list[tuple[int, ...]]:
        return [(0,)] * len(self.lp.top)

    def attach(self, tops: list[Blob]) -> None:
        self.top_blobs = tops
        self._views = ([PyBlob(b) for b in self.bottom_blobs], [PyBlob(t) for t in tops])

    def bottom_vec(self) -> RawBlobVec:
        """A fresh copy of the bottom vector, as Caffe converts it for every call."""
        return RawBlobVec(self._views[0])

    def top_vec(self) -> RawBlobVec:
        return RawBlobVec(self._views[1])

    def _call(self, what: str, *args) -> None:
        try:
            getattr(self.obj, what)(*args)
        except FcnkitError as e:
            raise error_like(type(e), f"layer {self.name!r} ({self.type}): {e}") from None
        except Exception as e:
            raise error_like(type(e), f"layer {self.name!r} ({self.type}): {what}() failed: "
                                      f"{type(e).__name__}: {e}") from e

    def forward(self, bottoms, params, run):
        if bottoms:
            return self._forward_with_bottoms(bottoms, run)
        if not self._set_up:
            self._call("setup", self.bottom_vec(), self.top_vec())
            self._set_up = True
        self._call("reshape", self.bottom_vec(), self.top_vec())
        if not run.meta:
            self._call("forward", self.bottom_vec(), self.top_vec())
        return [t.tensor for t in self.top_blobs]

    def _forward_with_bottoms(self, bottoms, run):
        for blob, x in zip(self.bottom_blobs, bottoms):
            blob.reshape(*x.shape)
        if not self._set_up:
            self._call("setup", self.bottom_vec(), self.top_vec())
            self._set_up = True
        if run.meta:
            self._call("reshape", self.bottom_vec(), self.top_vec())
            return [t.tensor for t in self.top_blobs]
        if not self.top_blobs:   # no tops: no gradient can flow back through the layer
            self.run_on_host(bottoms)
            return []
        return list(_PythonFunction.apply(self, *bottoms))

    def run_on_host(self, xs) -> None:
        """Copy the bottoms into the host blobs, then the layer's reshape() and forward()."""
        for blob, x in zip(self.bottom_blobs, xs):
            blob.reshape(*x.shape)
            blob.data = x.detach().cpu().numpy()
        self._call("reshape", self.bottom_vec(), self.top_vec())
        self._call("forward", self.bottom_vec(), self.top_vec())
