"""Net: a Caffe NetParameter run on PyTorch with Caffe's semantics, behind a pycaffe-like API.

Construction follows Caffe's Net::Init: keep the layers the NetState (phase, level, stages)
includes, connect bottoms to earlier tops (a top named like its bottom is in-place), create
each layer's learnable blobs from its fillers (or `param { name }` shares), and propagate
shapes. Convolutions, pooling, crops, eltwise and pointwise layers get their shapes from
netgen.shapes' Reshape rules as empty meta tensors; the other layers (data, losses, softmax,
...; all layers under mixed precision) run their forward on torch's meta device, whose Python
meta kernels import torch._dynamo and sympy on first use (over a second per process) and cost
milliseconds per layer on every reshape. Running the net is a sequence of pure torch calls,
so autograd gives Caffe's backward: gradients of blobs read by several layers add up as they
do through Caffe's Split layers, and parameter gradients accumulate across backward passes
like Caffe's diffs until `clear_param_diffs()`.

The objective is Σ loss_weight · sum(top) over all tops; loss_weight defaults to 1 for the
first top of *Loss layers and 0 otherwise.

Mixed precision (`amp="bf16"|"fp16"`): layers run under torch.autocast; loss and accuracy
layers run outside it in float32, so losses and their gradients start in full precision.
Parameters stay in `dtype`; Convolution, Deconvolution and InnerProduct read a half copy of
theirs, cast once per change of the float32 value (a solver update, copy_from, an assignment
to Param.data) rather than on every pass, and shared between nets that share the Param (a
solver's test nets); their gradients reach the float32 parameters in float32. With fp16, scale
the objective (forward_backward(scale=...)) and unscale the gradients yourself to avoid
underflow.

Channels-last (`channels_last=True`, the default under amp): convolutions run on NHWC-strided
activations (same (N, C, H, W) shapes, values equal up to float rounding), which oneDNN
computes without reordering them to and from its blocked layout (full-width FCN-8s on CPU:
bf16 forward ~20 % faster, float32 ~5 %; bench/bench_engine.py). Float32 keeps the plain
layout by default: its sums round differently in channels-last, so results (and a training
run's trajectory) would no longer repeat earlier runs bit for bit. Layout-agnostic layers
between convolutions keep the format, any other layer gets a plain contiguous bottom.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from netgen.errors import FcnkitError
from netgen.netstate import filter_net, make_state
from netgen.proto import caffe_pb2
from netgen.shapes import RULES as SHAPE_RULES
from surgery.caffemodel import legacy_fits

from .blob import Blob, Param
from .half_weights import half_weight
from .layers import LAYERS, BuildContext, Layer, Run
from .snapshot import blob_array

AMP_DTYPES = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Layers whose top is a fresh tensor that their own backward does not read: an in-place
# layer after one of them may overwrite that top.
FRESH_TOP = frozenset({"Convolution", "Deconvolution", "InnerProduct", "Scale", "Bias",
                       "BatchNorm"})
HALF = (torch.float16, torch.bfloat16)
# Layers whose netgen.shapes rule checks all that the engine's forward checks (the engine's
# convolutions and pooling take 4-D bottoms only): their meta tops come from the rule. The
# rest run their forward on the meta device, which validates their options against shapes.
NEEDS_4D = frozenset({"Convolution", "Deconvolution", "Pooling"})
RULE_SHAPED = NEEDS_4D | {"Crop", "Eltwise", "Split", "ReLU", "Sigmoid", "TanH", "Dropout",
                          "AbsVal", "BNLL", "Power", "Exp", "Log", "ELU", "Threshold", "Clip",
                          "Swish"}
# Layers that read a bottom whatever its strides and give a top in the bottom's memory format:
# channels-last activations pass through them unconverted.
KEEPS_LAYOUT = RULE_SHAPED | {"Scale", "Bias"}
# Layers whose params are read in half precision under amp (autocast runs their ops in half)
HALF_PARAMS = frozenset({"Convolution", "Deconvolution", "InnerProduct"})


@dataclass
class LayerRecord:
    """One layer of the built net: names, its implementation and its (possibly shared) params."""
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    impl: Layer
    params: list[Param] = field(default_factory=list)
    param_shapes: list[tuple[int, ...]] = field(default_factory=list)  # as this layer sees them
    loss_weights: list[float] = field(default_factory=list)
    propagate_down: list[bool] = field(default_factory=list)

    @property
    def blobs(self) -> list[Param]:
        """pycaffe's name for a layer's learnable blobs."""
        return self.params


def _load_param(net_param: caffe_pb2.NetParameter | str | os.PathLike) -> caffe_pb2.NetParameter:
    if isinstance(net_param, (str, os.PathLike)):
        from netgen.schema import read_net
        net_param = read_net(net_param)
    elif not isinstance(net_param, caffe_pb2.NetParameter):
        raise FcnkitError(f"Net needs a NetParameter or a prototxt path, got {type(net_param).__name__}")
    if net_param.layers or net_param.input:
        from netgen.legacy import upgrade_net
        return upgrade_net(net_param)
    copy = caffe_pb2.NetParameter()
    copy.CopyFrom(net_param)
    return copy


def _fits(stored: tuple[int, ...], wanted: tuple[int, ...], legacy: bool) -> bool:
    """Caffe's shape check: exact, except that blobs stored with legacy 4-D dims match the
    trailing axes (1x1x4096x25088 fits 4096x25088)."""
    return stored == wanted or (legacy and legacy_fits(stored, wanted))


class Net:
    """A Caffe net on PyTorch.

    Net(net_param | path, phase="TRAIN"|"TEST", *, weights=None, device="cpu", stages=(),
        level=0, allow_python_modules=False, dtype=torch.float32, amp=None,
        channels_last=None)

    phase, level and stages make the NetState that picks layers (a `state` inside net_param
    is replaced, as Caffe's Net(file, phase, level, stages) does). weights: a .caffemodel /
    .h5 path or a Weights mapping, copied in by layer name. device: "cpu", "cuda", "cuda:N".
    dtype: float32, or float64 (gradient checks). amp: None, "bf16" or "fp16" autocast.
    channels_last: run convolutions on channels-last activations (default: on under amp,
    where it saves oneDNN's layout reorders; off in float32, which then repeats earlier
    results bit for bit).
    Python layers resolve to fcnkit's data layers; any other module is imported only with
    allow_python_modules=True. Initial weights come from the fillers (seeded from torch's RNG,
    so torch.manual_seed reproduces them) unless the prototxt carries blobs.

    Attributes (pycaffe names):
      blobs   OrderedDict name -> Blob, in creation order.
      params  OrderedDict layer name -> list[Param], layers with learnable blobs only;
              a shared param is the same Param object in every sharing layer.
      layers  list[LayerRecord] (.name .type .bottoms .tops .params/.blobs .loss_weights).
      inputs  names of Input-layer tops (settable: blob.reshape(...) / blob.data[...] = x).
      outputs names of tops no later layer reads.
      net_param  the NetParameter actually built (filtered for the state, upgraded).
      retain_blob_diffs  keep activation gradients for Blob.diff (default False).
    """

    def __init__(self, net_param: caffe_pb2.NetParameter | str | os.PathLike, phase: str = "TRAIN",
                 *, weights: str | os.PathLike | Mapping | None = None,
                 device: str | torch.device = "cpu", stages: Sequence[str] = (), level: int = 0,
                 allow_python_modules: bool = False, dtype: torch.dtype = torch.float32,
                 amp: str | None = None, channels_last: bool | None = None):
        if amp not in AMP_DTYPES:
            raise FcnkitError(f"amp must be 'bf16', 'fp16' or None, got {amp!r}")
        if dtype not in (torch.float32, torch.float64):
            raise FcnkitError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.phase = phase
        self.net_param = filter_net(_load_param(net_param), make_state(phase, level, stages))
        self.device = torch.device(device)
        self.dtype = dtype
        self.amp = AMP_DTYPES[amp]
        self.channels_last = self.amp is not None if channels_last is None else channels_last
        self.retain_blob_diffs = False
        self.blobs: OrderedDict[str, Blob] = OrderedDict()
        self.params: OrderedDict[str, list[Param]] = OrderedDict()
        self.layers: list[LayerRecord] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._objective: torch.Tensor | None = None
        self._first: dict[str, torch.Tensor] = {}
        # fillers draw from a generator seeded off torch's RNG: torch.manual_seed reproduces a net
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        ctx = BuildContext(phase=phase, dtype=dtype, allow_python_modules=allow_python_modules,
                           rng=rng)
        self._rng = rng
        try:
            self._build(ctx)
        except FcnkitError as e:  # name the prototxt and the layer's line when built from a file
            if isinstance(net_param, (str, os.PathLike)):
                from netgen.schema import locate_layer_error
                raise locate_layer_error(net_param, e) from None
            raise
        except (MemoryError, RuntimeError) as e:  # torch: "can't allocate memory", "out of memory"
            if isinstance(e, RuntimeError) and not re.search("allocate|out of memory|overflow",
                                                             str(e)):
                raise
            layer = self.net_param.layer[min(len(self.layers), len(self.net_param.layer) - 1)]
            raise FcnkitError(f"layer {layer.name!r} ({layer.type}): its blobs do not fit in "
                              f"memory ({str(e).splitlines()[0][:160]})") from None
        if weights is not None:
            self.copy_from(weights)

    # ---------------------------------------------------------------- construction
    def _build(self, ctx: BuildContext) -> None:
        shared: dict[str, tuple[Param, caffe_pb2.ParamSpec]] = {}
        available: list[str] = []
        env: dict[str, torch.Tensor] = {}
        run = self._run_spec(meta=True)
        with torch.no_grad():
            for lp in self.net_param.layer:
                rec = self._make_record(lp, ctx, available)
                bottoms = [env[b] for b in rec.bottoms]
                self._make_params(rec, lp, [tuple(b.shape) for b in bottoms], shared)
                if rec.impl.host_tops:
                    self._make_host_tops(rec)
                tops = self._meta_tops(rec, lp, bottoms, run)
                for name, t in zip(rec.tops, tops):
                    env[name] = t.to("meta")
                    if name not in self.blobs:
                        self.blobs[name] = Blob(name, env[name], device=self.device)
                self.layers.append(rec)
        self._set_blobs(env)
        self.outputs = list(available)
        self._mark_in_place()

    def _mark_in_place(self) -> None:
        """Let an in-place ReLU (top named like its bottom) overwrite the bottom tensor when
        that is safe under autograd: the bottom was just produced by a FRESH_TOP layer and no
        other layer reads that value."""
        readers: dict[tuple[int, str], int] = {}
        writer: dict[str, int] = {}
        for i, rec in enumerate(self.layers):
            for b in rec.bottoms:
                key = (writer.get(b, -1), b)
                readers[key] = readers.get(key, 0) + 1
            for t in rec.tops:
                writer[t] = i
        writer = {}
        for i, rec in enumerate(self.layers):
            if rec.type == "ReLU" and rec.tops == rec.bottoms:
                b = rec.bottoms[0]
                src = writer.get(b, -1)
                rec.impl.in_place = (src >= 0 and self.layers[src].type in FRESH_TOP
                                     and readers[(src, b)] == 1)
            for t in rec.tops:
                writer[t] = i

    def _make_record(self, lp, ctx: BuildContext, available: list[str]) -> LayerRecord:
        cls = LAYERS.get(lp.type)
        if cls is None:
            raise FcnkitError(f"layer {lp.name!r}: unsupported layer type {lp.type!r}")
        impl = cls(lp, ctx)
        for i, b in enumerate(lp.bottom):
            if b not in self.blobs:
                raise FcnkitError(f"layer {lp.name!r}: unknown bottom blob {b!r} (bottom {i})")
            if b in available:
                available.remove(b)
        for i, t in enumerate(lp.top):
            in_place = i < len(lp.bottom) and lp.bottom[i] == t
            if not in_place and (t in self.blobs or t in lp.top[:i]):
                raise FcnkitError(f"layer {lp.name!r}: top blob {t!r} produced by multiple sources")
            available.append(t)
        if lp.loss_weight and len(lp.loss_weight) != len(lp.top):
            raise FcnkitError(f"layer {lp.name!r}: loss_weight must be given once per top "
                              f"({len(lp.top)}), got {len(lp.loss_weight)}")
        if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
            raise FcnkitError(f"layer {lp.name!r}: propagate_down must be given once per bottom")
        weights = list(lp.loss_weight) or [1.0 if (impl.is_loss and i == 0) else 0.0
                                           for i in range(len(lp.top))]
        return LayerRecord(lp.name, lp.type, list(lp.bottom), list(lp.top), impl,
                           loss_weights=weights, propagate_down=list(lp.propagate_down))

    def _make_params(self, rec: LayerRecord, lp, shapes, shared) -> None:
        inits = rec.impl.param_inits(shapes)
        where = f"layer {rec.name!r}"
        if len(lp.param) > len(inits):
            raise FcnkitError(f"{where}: {len(lp.param)} param specs for {len(inits)} learnable blobs")
        if lp.blobs and len(lp.blobs) != len(inits):
            raise FcnkitError(f"{where}: {len(lp.blobs)} blobs given, the layer has {len(inits)}")
        fixed = getattr(rec.impl, "fixed_lr_mult", None)
        for i, init in enumerate(inits):
            spec = lp.param[i] if i < len(lp.param) else caffe_pb2.ParamSpec()
            lr_mult = spec.lr_mult
            if fixed is not None:
                if i < len(lp.param) and spec.lr_mult != fixed:
                    raise FcnkitError(f"{where}: param {i} lr_mult must be {fixed:g} "
                                      f"({rec.type} statistics are not learned)")
                lr_mult = fixed
            shape = tuple(init.shape)
            rec.param_shapes.append(shape)
            if spec.name and spec.name in shared:
                rec.params.append(self._share(rec, i, spec, shape, *shared[spec.name]))
                continue
            value = self._initial_value(lp, i, init, where, self._rng)
            param = Param(value.to(device=self.device, dtype=self.dtype), name=spec.name,
                          owner=(rec.name, i), lr_mult=lr_mult, decay_mult=spec.decay_mult)
            if spec.name:   # a copy: merging multipliers must not edit the net definition
                shared[spec.name] = (param, caffe_pb2.ParamSpec.FromString(spec.SerializeToString()))
            rec.params.append(param)
        if rec.params:
            self.params[rec.name] = rec.params

    @staticmethod
    def _initial_value(lp, i: int, init, where: str, rng) -> torch.Tensor:
        """Blobs stored in the prototxt win over fillers, as in Caffe."""
        if not lp.blobs:
            return init.make(f"{where} param {i}", rng)
        blob = lp.blobs[i]
        arr = blob_array(blob, f"{where} blob {i}")
        if not _fits(tuple(arr.shape), tuple(init.shape), legacy=not blob.HasField("shape")):
            raise FcnkitError(f"{where}: blob {i} has shape {tuple(arr.shape)}, expected {init.shape}")
        return torch.from_numpy(arr.reshape(init.shape))

    @staticmethod
    def _share(rec: LayerRecord, i: int, spec, shape, owner: Param, owner_spec) -> Param:
        """Caffe's AppendParam for a second user of a named param: shapes and multipliers agree."""
        where = f"layer {rec.name!r} param {spec.name!r}"
        permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
        if permissive and owner.count != int(np.prod(shape)):
            raise FcnkitError(f"{where}: shared blob has {owner.count} values, this layer needs "
                              f"{int(np.prod(shape))}")
        if not permissive and owner.shape != shape:
            raise FcnkitError(f"{where}: shared blob has shape {owner.shape}, this layer needs "
                              f"{shape} (share_mode PERMISSIVE to match counts only)")
        for attr in ("lr_mult", "decay_mult"):
            if spec.HasField(attr):
                if owner_spec.HasField(attr) and getattr(owner_spec, attr) != getattr(spec, attr):
                    raise FcnkitError(f"{where}: shared param has mismatched {attr}")
                setattr(owner, attr, getattr(spec, attr))
                setattr(owner_spec, attr, getattr(spec, attr))
        owner.tensor.requires_grad_(owner.lr_mult != 0)
        return owner

    def _make_host_tops(self, rec: LayerRecord) -> None:
        shapes = rec.impl.initial_shapes()
        blobs = []
        for name, shape in zip(rec.tops, shapes):
            blob = Blob(name, torch.zeros(shape, dtype=self.dtype), host=True)
            self.blobs[name] = blob
            blobs.append(blob)
        rec.impl.attach(blobs)
        if rec.type == "Input":
            self.inputs.extend(rec.tops)

    # ---------------------------------------------------------------- running
    def _run_spec(self, meta: bool) -> Run:
        return Run(meta=meta, train=self.phase == "TRAIN", device=self.device, dtype=self.dtype,
                   overwrite=not meta and not self.retain_blob_diffs,
                   channels_last=self.channels_last and not meta)

    def _param_tensors(self, rec: LayerRecord, meta: bool = False) -> list[torch.Tensor]:
        half = not meta and self.amp is not None and rec.type in HALF_PARAMS
        out = []
        for p, shape in zip(rec.params, rec.param_shapes):
            if half:
                out.append(half_weight(p, shape, self.amp, self.channels_last))
                continue
            t = p.tensor.to("meta") if meta else p.tensor
            out.append(t if tuple(t.shape) == shape else t.view(shape))
        return out

    def _meta_tops(self, rec: LayerRecord, lp, bottoms: list[torch.Tensor],
                   run: Run) -> list[torch.Tensor]:
        """A layer's tops as meta tensors: by netgen.shapes' rule when it has one (no torch op
        runs), else by the layer's own forward on the meta device. Where the rule rejects the
        layer, the forward decides, so the engine accepts and rejects exactly what it runs."""
        rule = SHAPE_RULES[rec.type] if rec.type in RULE_SHAPED else None
        four_d = rec.type not in NEEDS_4D or all(b.dim() == 4 for b in bottoms)
        if rule is not None and four_d and bottoms and self.amp is None:
            try:
                shapes = rule(lp, [tuple(b.shape) for b in bottoms], len(rec.tops))
            except FcnkitError:
                pass
            else:
                return [torch.empty(s, dtype=bottoms[0].dtype, device="meta") for s in shapes]
        with self._autocast(rec.impl.is_loss or getattr(rec.impl, "full_precision", False)):
            return rec.impl.forward(bottoms, self._param_tensors(rec, meta=True), run)

    def _autocast(self, full: bool):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp, enabled=not full)

    def _run(self, meta: bool) -> torch.Tensor:
        """One pass over all layers; returns the objective (a float32 scalar tensor)."""
        self._release()
        run = self._run_spec(meta)
        env: dict[str, torch.Tensor] = {}
        first: dict[str, torch.Tensor] = {}
        objective = torch.zeros((), dtype=self._objective_dtype, device="meta" if meta else self.device)
        input_grads = not meta and (self.retain_blob_diffs or self.net_param.force_backward)
        for rec, lp in zip(self.layers, self.net_param.layer):
            impl = rec.impl
            bottoms = [env[b] for b in rec.bottoms]
            if rec.propagate_down:
                bottoms = [b if keep else b.detach() for b, keep in zip(bottoms, rec.propagate_down)]
            full = impl.is_loss or getattr(impl, "full_precision", False)
            if full and self.amp is not None:
                bottoms = [b.float() if b.dtype in HALF else b for b in bottoms]
            if self.channels_last and rec.type not in KEEPS_LAYOUT:
                bottoms = [b.contiguous() for b in bottoms]
            if meta:
                tops = self._meta_tops(rec, lp, bottoms, run)
            else:
                with self._autocast(full):
                    tops = impl.forward(bottoms, self._param_tensors(rec), run)
            if impl.host_tops and not bottoms:
                tops = [t.to("meta") if meta else
                        t.to(self.device, self.dtype, copy=True).requires_grad_(input_grads)
                        for t in tops]
            for name, t, w in zip(rec.tops, tops, rec.loss_weights):
                env[name] = t
                if self.retain_blob_diffs:   # Caffe's diff of an in-place blob: its first value's
                    first.setdefault(name, t)
                if w:
                    objective = objective + w * t.to(self._objective_dtype).sum()
        self._set_blobs(env)
        self._first = first
        return objective

    def _release(self) -> None:
        """Drop the previous pass's activations and graph before computing new ones, so a
        training loop never holds two iterations' worth of activations."""
        self._objective = None
        self._first = {}
        for blob in self.blobs.values():
            if not blob.host:
                blob.tensor = blob.tensor.to("meta")
                blob._diff = None

    @property
    def _objective_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def _set_blobs(self, env: Mapping[str, torch.Tensor]) -> None:
        for name, t in env.items():
            blob = self.blobs[name]
            if not blob.host:
                blob.tensor = t
                blob._diff = None

    def _records_graph(self) -> bool:
        return self.phase == "TRAIN" or self.net_param.force_backward or self.retain_blob_diffs

    def _set_inputs(self, inputs: Mapping[str, Any]) -> None:
        for name, value in inputs.items():
            if name not in self.inputs:
                raise FcnkitError(f"{name!r} is not a net input (inputs: {', '.join(self.inputs)})")
            arr = np.asarray(value)
            blob = self.blobs[name]
            if arr.shape != blob.shape:
                blob.reshape(*arr.shape)
            blob.data = arr

    def forward(self, **inputs) -> dict[str, np.ndarray]:
        """Set the named inputs (reshaping them to fit), run the whole net, return the outputs.

        The autograd graph is kept for backward() when the phase is TRAIN, the net sets
        force_backward, or retain_blob_diffs is on; otherwise the pass runs under no_grad.
        """
        self._set_inputs(inputs)
        if self._records_graph():
            self._objective = self._run(meta=False)
        else:
            with torch.no_grad():
                self._run(meta=False)
        return {name: self.blobs[name].data for name in self.outputs}

    def backward(self, *, scale: float = 1.0) -> None:
        """Backpropagate the objective of the last forward(); param gradients accumulate."""
        if self._objective is None:
            raise RuntimeError("backward() needs a preceding forward() that recorded the graph "
                               "(TRAIN phase, force_backward, or retain_blob_diffs)")
        objective, self._objective = self._objective, None
        keep = self.retain_blob_diffs
        if keep:
            for t in self._first.values():
                if t.requires_grad:
                    t.retain_grad()
        if objective.requires_grad:
            (objective * scale if scale != 1.0 else objective).backward()
        if keep:
            for name, t in self._first.items():
                blob = self.blobs[name]
                grad = t.grad if t.grad is not None else torch.zeros_like(t)
                blob._diff = grad.to("cpu") if blob.host else grad

    def forward_backward(self, *, scale: float = 1.0) -> float:
        """forward() then backward(); returns the objective Σ loss_weight · top (unscaled).

        `scale` multiplies the gradient seed (loss scaling for fp16); gradients come out
        scaled by it.
        """
        self._objective = self._run(meta=False)
        loss = float(self._objective.detach())
        self.backward(scale=scale)
        return loss

    def reshape(self) -> None:
        """Propagate the current input shapes through the net (no compute): blob shapes update,
        Python data layers run their reshape(), as Caffe's Net::Reshape."""
        with torch.no_grad():
            self._run(meta=True)

    # ---------------------------------------------------------------- parameters
    def learnable_params(self) -> list[Param]:
        """Every distinct Param once, in Caffe's order (layer order, then blob order)."""
        seen: dict[int, Param] = {}
        for rec in self.layers:
            for p in rec.params:
                seen.setdefault(id(p), p)
        return list(seen.values())

    def clear_param_diffs(self) -> None:
        """Zero all parameter gradients (Caffe's ClearParamDiffs)."""
        for p in self.learnable_params():
            p.tensor.grad = None

    def share_weights(self, other: "Net") -> None:
        """Use `other`'s parameter tensors for layers of the same name (Caffe's
        ShareTrainedLayersWith, used for test nets): shapes must agree."""
        theirs = {rec.name: rec for rec in other.layers}
        replace: dict[int, Param] = {}
        for rec in self.layers:
            src = theirs.get(rec.name)
            if src is None or not rec.params:
                continue
            if len(src.params) != len(rec.params):
                raise FcnkitError(f"layer {rec.name!r}: {len(rec.params)} blobs here, "
                                  f"{len(src.params)} in the net shared with")
            for mine, its in zip(rec.params, src.params):
                if mine.shape != its.shape:
                    raise FcnkitError(f"layer {rec.name!r}: shape {mine.shape} here, "
                                      f"{its.shape} in the net shared with")
                replace[id(mine)] = its
        for rec in self.layers:
            rec.params[:] = [replace.get(id(p), p) for p in rec.params]


    share_with = share_weights  # pycaffe's name

    def copy_from(self, source: str | os.PathLike | Mapping[str, Sequence[np.ndarray]]) -> None:
        """Load weights by layer name (a .caffemodel/.h5 path or a Weights mapping). Layers the
        source lacks keep their values; source layers the net lacks are ignored; a blob count
        or shape mismatch is an error (as in Caffe's CopyTrainedLayersFrom)."""
        from surgery.caffemodel import load_weights
        where = str(source) if isinstance(source, (str, os.PathLike)) else "weights"
        weights = load_weights(source) if isinstance(source, (str, os.PathLike)) else source
        legacy = getattr(weights, "legacy", set())
        blobless = getattr(weights, "blobless", set())
        for rec in self.layers:
            if rec.params and rec.name in blobless:
                raise FcnkitError(f"{where}: layer {rec.name!r} has 0 blobs, the net expects "
                                  f"{len(rec.params)}")
            if rec.name not in weights:
                continue
            arrays = list(weights[rec.name])
            if len(arrays) != len(rec.params):
                raise FcnkitError(f"{where}: layer {rec.name!r} has {len(arrays)} blobs, the net "
                                  f"expects {len(rec.params)}")
            for i, (arr, param, shape) in enumerate(zip(arrays, rec.params, rec.param_shapes)):
                arr = np.asarray(arr)
                if not _fits(tuple(arr.shape), shape, (rec.name, i) in legacy):
                    raise FcnkitError(f"{where}: layer {rec.name!r} blob {i} has shape "
                                      f"{tuple(arr.shape)}, the net expects {shape}")
                with torch.no_grad():
                    param.tensor.copy_(torch.from_numpy(np.ascontiguousarray(arr))
                                       .reshape(param.shape))

    def to_weights(self):
        """The net's learnable blobs as a Weights mapping (layer -> float32 arrays, .types)."""
        from surgery.caffemodel import Weights
        weights = Weights()
        for rec in self.layers:
            if rec.params:
                weights[rec.name] = [p.tensor.detach().to("cpu", torch.float32).reshape(s).numpy().copy()
                                     for p, s in zip(rec.params, rec.param_shapes)]
                weights.types[rec.name] = rec.type
        return weights

    def save(self, path: str | os.PathLike, format: str = "binary") -> None:
        """Write the weights as a .caffemodel ("binary") or .caffemodel.h5 ("hdf5")."""
        from surgery.caffemodel import save_weights
        save_weights(path, self.to_weights(), net=self.net_param, format=format)
