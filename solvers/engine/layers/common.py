"""Layers that combine or rearrange blobs: InnerProduct, Eltwise, Scale, Bias, Concat, Slice,
Tile, Flatten, Reshape, Split, Silence, Softmax, ArgMax, BatchNorm."""
from __future__ import annotations

import math

import torch

from .base import ENGINE, Layer, ParamInit, register


def _count(shape, start: int, end: int | None = None) -> int:
    return math.prod(shape[start:end])


@register
class InnerProduct(Layer):
    """Flatten from `axis` on, then x W^T + b; weights (N, K), or (K, N) with transpose."""
    type = "InnerProduct"
    fields = {"inner_product_param": frozenset({
        "num_output", "bias_term", "weight_filler", "bias_filler", "axis", "transpose"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.inner_product_param
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("inner_product_param.num_output must be set and positive")
        self.p = p

    def param_inits(self, shapes):
        p = self.p
        k = _count(shapes[0], self.axis(p.axis, len(shapes[0])))
        w = (k, p.num_output) if p.transpose else (p.num_output, k)
        inits = [ParamInit(w, p.weight_filler if p.HasField("weight_filler") else None)]
        if p.bias_term:
            inits.append(ParamInit((p.num_output,), p.bias_filler if p.HasField("bias_filler") else None))
        return inits

    def forward(self, bottoms, params, run):
        x, w = bottoms[0], params[0]
        axis = self.axis(self.p.axis, x.dim())
        k = _count(x.shape, axis)
        if k != w.shape[0 if self.p.transpose else 1]:
            raise self.error(f"input size {k} (shape {tuple(x.shape)}) does not fit weights "
                             f"{tuple(w.shape)}")
        flat = x.reshape(_count(x.shape, 0, axis), k)
        y = flat @ w if self.p.transpose else flat @ w.t()
        if self.p.bias_term:
            y = y + params[1]
        return [y.reshape(tuple(x.shape[:axis]) + (self.p.num_output,))]


@register
class Eltwise(Layer):
    """Elementwise SUM (with per-bottom coefficients), PROD or MAX of equally shaped bottoms."""
    type = "Eltwise"
    bottoms = (2, None)
    fields = {"eltwise_param": frozenset({"operation", "coeff", "stable_prod_grad"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.eltwise_param
        if p.coeff and p.operation != 1:
            raise self.error("eltwise_param.coeff applies only to SUM")
        if p.coeff and len(p.coeff) != len(lp.bottom):
            raise self.error(f"{len(p.coeff)} coefficients for {len(lp.bottom)} bottoms")
        self.op = p.operation
        self.coeff = list(p.coeff) or [1.0] * len(lp.bottom)

    def forward(self, bottoms, params, run):
        shape = bottoms[0].shape
        if any(b.shape != shape for b in bottoms):
            raise self.error(f"bottom shapes differ: {[tuple(b.shape) for b in bottoms]}")
        if self.op == 0:
            return [math.prod(bottoms[1:], start=bottoms[0])]
        if self.op == 2:   # ties: the first bottom gets the gradient, as in Caffe
            return [torch.stack(bottoms).max(dim=0).values]
        out = bottoms[0] * self.coeff[0] if self.coeff[0] != 1 else bottoms[0]
        for b, c in zip(bottoms[1:], self.coeff[1:]):
            out = out + (b * c if c != 1 else b)
        return [out]


class _Broadcast(Layer):
    """Scale and Bias: a blob (learned, or bottom 1) broadcast over bottom 0 from `axis` on."""
    bottoms = (1, 2)
    param_name: str

    def _learned_shape(self, shape, axis_field: int, num_axes: int) -> tuple[int, ...]:
        axis = self.axis(axis_field, len(shape))
        if num_axes < -1:
            raise self.error(f"num_axes must be >= -1, got {num_axes}")
        end = len(shape) if num_axes == -1 else axis + num_axes
        if end > len(shape):
            raise self.error(f"num_axes {num_axes} from axis {axis} exceeds the bottom's axes")
        return tuple(shape[axis:end])

    def _shaped(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """`b` viewed so that it broadcasts against `x` from the layer's axis on."""
        if b.dim() == 0:
            return b
        axis = self.axis(getattr(self.lp, self.param_name).axis, x.dim())
        if tuple(x.shape[axis:axis + b.dim()]) != tuple(b.shape):
            raise self.error(f"shape {tuple(b.shape)} does not match bottom shape "
                             f"{tuple(x.shape)} from axis {axis}")
        return b.reshape(tuple(b.shape) + (1,) * (x.dim() - axis - b.dim()))


@register
class Scale(_Broadcast):
    """top = bottom0 * scale (+ bias): scale learned (default 1) or bottom 1; optional bias term."""
    type = "Scale"
    param_name = "scale_param"
    fields = {"scale_param": frozenset({"axis", "num_axes", "filler", "bias_term", "bias_filler"})}

    def param_inits(self, shapes):
        p = self.lp.scale_param
        if len(shapes) == 2:
            shape = tuple(shapes[1])
            inits = []
        else:
            shape = self._learned_shape(shapes[0], p.axis, p.num_axes)
            inits = [ParamInit(shape, p.filler if p.HasField("filler") else None, 1.0)]
        if p.bias_term:
            inits.append(ParamInit(shape, p.bias_filler if p.HasField("bias_filler") else None))
        return inits

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        scale = bottoms[1] if len(bottoms) == 2 else params[0]
        y = x * self._shaped(x, scale)
        if self.lp.scale_param.bias_term:
            y = y + self._shaped(x, params[-1])
        return [y]


@register
class Bias(_Broadcast):
    """top = bottom0 + bias: bias learned (default 0) or bottom 1."""
    type = "Bias"
    param_name = "bias_param"
    fields = {"bias_param": frozenset({"axis", "num_axes", "filler"})}

    def param_inits(self, shapes):
        if len(shapes) == 2:
            return []
        p = self.lp.bias_param
        shape = self._learned_shape(shapes[0], p.axis, p.num_axes)
        return [ParamInit(shape, p.filler if p.HasField("filler") else None)]

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        bias = bottoms[1] if len(bottoms) == 2 else params[0]
        return [x + self._shaped(x, bias)]


@register
class Concat(Layer):
    """Join bottoms along `axis` (or the legacy `concat_dim`)."""
    type = "Concat"
    bottoms = (1, None)
    fields = {"concat_param": frozenset({"axis", "concat_dim"})}

    def forward(self, bottoms, params, run):
        p = self.lp.concat_param
        if p.HasField("concat_dim") and p.HasField("axis"):
            raise self.error("give concat_param.axis or concat_dim, not both")
        x = bottoms[0]
        axis = p.concat_dim if p.HasField("concat_dim") else self.axis(p.axis, x.dim())
        for b in bottoms[1:]:
            if b.dim() != x.dim() or any(b.shape[i] != x.shape[i] for i in range(x.dim()) if i != axis):
                raise self.error(f"bottom shapes {tuple(x.shape)} and {tuple(b.shape)} differ "
                                 f"off axis {axis}")
        return [torch.cat(bottoms, dim=axis)]


@register
class Slice(Layer):
    """Cut bottom 0 along `axis` (or the legacy `slice_dim`) at `slice_point`s, or into equal
    parts when none are given; one top per piece."""
    type = "Slice"
    tops = (1, None)
    fields = {"slice_param": frozenset({"axis", "slice_point", "slice_dim"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.slice_param
        if p.HasField("axis") and p.HasField("slice_dim"):
            raise self.error("give slice_param.axis or slice_dim, not both")
        points = list(p.slice_point)
        if points and len(points) != len(lp.top) - 1:
            raise self.error(f"{len(points)} slice_point(s) for {len(lp.top)} tops; "
                             f"need {len(lp.top) - 1}")
        if any(b <= a for a, b in zip([0] + points, points)):
            raise self.error(f"slice_point {points} must be positive and increasing")
        self.points = points

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        p = self.lp.slice_param
        if p.HasField("slice_dim"):
            if p.slice_dim >= x.dim():
                raise self.error(f"slice_dim {p.slice_dim} out of range for a {x.dim()}-axis bottom")
            axis = p.slice_dim
        else:
            axis = self.axis(p.axis, x.dim())
        size, ntop = x.shape[axis], len(self.lp.top)
        if self.points:
            if self.points[-1] >= size:
                raise self.error(f"slice_point {self.points} does not cut axis {axis} "
                                 f"(size {size}) into {ntop} non-empty parts")
            sizes = [b - a for a, b in zip([0] + self.points, self.points + [size])]
        else:
            if size % ntop:
                raise self.error(f"{ntop} tops do not evenly divide axis {axis} (size {size})")
            sizes = [size // ntop] * ntop
        return list(torch.split(x, sizes, dim=axis))


@register
class Tile(Layer):
    """Repeat the block of axes axis..end `tiles` times along `axis` (whole-block copies,
    as numpy.tile, not element repeats)."""
    type = "Tile"
    fields = {"tile_param": frozenset({"axis", "tiles"})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.tile_param
        if not p.HasField("tiles") or p.tiles <= 0:
            raise self.error("tile_param.tiles must be set and positive")

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        axis = self.axis(self.lp.tile_param.axis, x.dim())
        reps = [1] * x.dim()
        reps[axis] = self.lp.tile_param.tiles
        return [x.repeat(reps)]


@register
class Flatten(Layer):
    """Merge axes axis..end_axis into one."""
    type = "Flatten"
    fields = {"flatten_param": frozenset({"axis", "end_axis"})}

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        p = self.lp.flatten_param
        start = self.axis(p.axis, x.dim())
        end = self.axis(p.end_axis, x.dim(), "end_axis")
        shape = tuple(x.shape[:start]) + (_count(x.shape, start, end + 1),) + tuple(x.shape[end + 1:])
        return [x.reshape(shape)]


@register
class Reshape(Layer):
    """Replace axes [axis, axis+num_axes) by `shape`: 0 copies the bottom's dim, -1 is inferred."""
    type = "Reshape"
    fields = {"reshape_param": frozenset({"shape", "axis", "num_axes"})}

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        p = self.lp.reshape_param
        dims = list(p.shape.dim)
        if sum(d == -1 for d in dims) > 1 or any(d < -1 for d in dims):
            raise self.error(f"reshape_param.shape {dims}: at most one -1 and no other negatives")
        start = p.axis if p.axis >= 0 else x.dim() + p.axis + 1
        if not 0 <= start <= x.dim():
            raise self.error(f"reshape_param.axis {p.axis} out of range")
        if p.num_axes < -1:
            raise self.error(f"reshape_param.num_axes must be >= -1, got {p.num_axes}")
        end = x.dim() if p.num_axes == -1 else start + p.num_axes
        if end > x.dim():
            raise self.error(f"axis {p.axis} + num_axes {p.num_axes} exceeds the bottom's axes")
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= x.dim():
                    raise self.error(f"shape dim {i} is 0 but there is no bottom axis to copy")
                dims[i] = x.shape[start + i]
        new = list(x.shape[:start]) + dims + list(x.shape[end:])
        if -1 in new:
            known = math.prod(d for d in new if d != -1)
            if known == 0 or x.numel() % known:
                raise self.error(f"cannot infer -1 in {new} for {x.numel()} elements")
            new[new.index(-1)] = x.numel() // known
        if math.prod(new) != x.numel():
            raise self.error(f"shape {new} does not hold the bottom's {x.numel()} elements "
                             f"(shape {tuple(x.shape)})")
        return [x.reshape(new)]


@register
class Split(Layer):
    """The same blob under several names (autograd sums the gradients, as Caffe's Split does)."""
    type = "Split"
    tops = (1, None)

    def forward(self, bottoms, params, run):
        return [bottoms[0]] * len(self.lp.top)


@register
class Silence(Layer):
    """Consumes blobs so they are not net outputs."""
    type = "Silence"
    bottoms = (1, None)
    tops = (0, 0)

    def forward(self, bottoms, params, run):
        return []


@register
class Softmax(Layer):
    """Softmax over `axis`."""
    type = "Softmax"
    fields = {"softmax_param": frozenset({"axis", ENGINE})}

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        return [torch.softmax(x, dim=self.axis(self.lp.softmax_param.axis, x.dim()))]


@register
class ArgMax(Layer):
    """Indices (or values with out_max_val) of the top_k largest entries, as floats; no gradient.

    Without `axis`, each item's flattened trailing axes are searched and the top is
    (N, 1 or 2, top_k): indices, then values when out_max_val.
    """
    type = "ArgMax"
    fields = {"argmax_param": frozenset({"out_max_val", "top_k", "axis"})}

    def forward(self, bottoms, params, run):
        x = bottoms[0].detach()
        p = self.lp.argmax_param
        if p.top_k < 1:
            raise self.error("argmax_param.top_k must be >= 1")
        if p.HasField("axis"):
            axis = self.axis(p.axis, x.dim())
            if p.top_k > x.shape[axis]:
                raise self.error(f"top_k {p.top_k} exceeds axis size {x.shape[axis]}")
            values, index = x.topk(p.top_k, dim=axis)
            return [values if p.out_max_val else index.to(x.dtype)]
        flat = x.reshape(x.shape[0], -1)
        if p.top_k > flat.shape[1]:
            raise self.error(f"top_k {p.top_k} exceeds the {flat.shape[1]} values per item")
        values, index = flat.topk(p.top_k, dim=1)
        parts = [index.to(x.dtype)] + ([values] if p.out_max_val else [])
        return [torch.stack(parts, dim=1)]


@register
class BatchNorm(Layer):
    """Caffe's BatchNorm (no affine part; pair it with Scale). Blobs: mean sum, variance sum,
    scale factor; statistics are blob / factor. Training (unless use_global_stats) normalises
    with the batch statistics and updates the blobs as moving averages:
    factor = λ factor + 1, mean = λ mean + μ, var = λ var + m/(m-1) σ² (m values per channel)."""
    type = "BatchNorm"
    fields = {"batch_norm_param": frozenset({"use_global_stats", "moving_average_fraction", "eps"})}
    fixed_lr_mult = 0.0   # Caffe forbids learning the statistics

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.batch_norm_param
        self.global_stats = p.use_global_stats if p.HasField("use_global_stats") else ctx.phase == "TEST"
        self.fraction = p.moving_average_fraction
        self.eps = p.eps

    def param_inits(self, shapes):
        c = shapes[0][1] if len(shapes[0]) > 1 else 1
        return [ParamInit((c,)), ParamInit((c,)), ParamInit((1,))]

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        mean_sum, var_sum, factor = params
        c = x.shape[1] if x.dim() > 1 else 1
        if mean_sum.shape[0] != c:
            raise self.error(f"bottom has {c} channels, statistics have {mean_sum.shape[0]}")
        view = (1, c) + (1,) * (x.dim() - 2)
        if self.global_stats:
            inv = torch.where(factor == 0, torch.zeros_like(factor), 1.0 / factor)
            mean, var = mean_sum * inv, var_sum * inv
        else:
            dims = [d for d in range(x.dim()) if d != 1]
            mean = x.mean(dim=dims)
            var = ((x - mean.reshape(view)) ** 2).mean(dim=dims)
            if not run.meta:
                m = x.numel() // c
                with torch.no_grad():
                    factor.mul_(self.fraction).add_(1.0)
                    mean_sum.mul_(self.fraction).add_(mean.detach().to(mean_sum.dtype))
                    var_sum.mul_(self.fraction).add_(var.detach().to(var_sum.dtype)
                                                     * (m / (m - 1) if m > 1 else 1.0))
        return [(x - mean.reshape(view)) / torch.sqrt(var.reshape(view) + self.eps)]
