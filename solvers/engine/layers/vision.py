"""Spatial layers: Convolution, Deconvolution, Pooling, LRN, Crop — with Caffe's size rules."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import ENGINE, FLT_MAX, Layer, ParamInit, pair, register

CONV_FIELDS = {"convolution_param": frozenset({
    "num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h", "pad_w",
    "kernel_h", "kernel_w", "stride_h", "stride_w", "group", "weight_filler", "bias_filler",
    ENGINE, "axis", "force_nd_im2col"})}


class _ConvBase(Layer):
    """Options shared by Convolution and Deconvolution (Caffe's BaseConvolutionLayer)."""
    fields = CONV_FIELDS

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.convolution_param
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("convolution_param.num_output must be set and positive")
        if p.axis != 1:
            raise self.error("convolution_param.axis other than 1 is not supported")
        self.num_output = p.num_output
        self.group = p.group
        self.bias_term = p.bias_term
        has_kw = p.HasField("kernel_h") or p.HasField("kernel_w")
        if has_kw and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
            raise self.error("kernel_h and kernel_w must be given together")
        has_sw = p.HasField("stride_h") or p.HasField("stride_w")
        if has_sw and not (p.HasField("stride_h") and p.HasField("stride_w")):
            raise self.error("stride_h and stride_w must be given together")
        has_pw = p.HasField("pad_h") or p.HasField("pad_w")
        self.kernel = pair("kernel_size", self, p.kernel_size, (has_kw, p.kernel_h, p.kernel_w), 0)
        self.stride = pair("stride", self, p.stride, (has_sw, p.stride_h, p.stride_w), 1)
        self.pad = pair("pad", self, p.pad, (has_pw, p.pad_h, p.pad_w), 0)
        self.dilation = pair("dilation", self, p.dilation, None, 1)
        for name, v in (("kernel size", self.kernel), ("stride", self.stride),
                        ("dilation", self.dilation)):
            if min(v) <= 0:
                raise self.error(f"{name} must be positive, got {v}")
        if self.group == 0 or self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} is not divisible by group {self.group}")
        self.weight_filler = p.weight_filler if p.HasField("weight_filler") else None
        self.bias_filler = p.bias_filler if p.HasField("bias_filler") else None

    def _channels(self, shape) -> int:
        if len(shape) != 4:
            raise self.error(f"needs a 4-D bottom (N, C, H, W), got shape {tuple(shape)}")
        if shape[1] % self.group:
            raise self.error(f"input channels {shape[1]} not divisible by group {self.group}")
        return shape[1]

    def _inits(self, weight_shape) -> list[ParamInit]:
        inits = [ParamInit(weight_shape, self.weight_filler)]
        if self.bias_term:
            inits.append(ParamInit((self.num_output,), self.bias_filler))
        return inits

    def _check_shape(self, x: torch.Tensor, w: torch.Tensor, channels: int) -> None:
        if x.dim() != 4 or x.shape[1] != channels:
            raise self.error(f"bottom shape {tuple(x.shape)} does not fit weights {tuple(w.shape)}")


@register
class Convolution(_ConvBase):
    """out = floor((in + 2p - ((k-1)d + 1)) / s) + 1; weights (Cout, Cin/g, kh, kw)."""
    type = "Convolution"

    def param_inits(self, shapes):
        c = self._channels(shapes[0])
        return self._inits((self.num_output, c // self.group) + self.kernel)

    def forward(self, bottoms, params, run):
        x, w = bottoms[0], params[0]
        self._check_shape(x, w, w.shape[1] * self.group)
        for size, k, p, d in zip(x.shape[2:], self.kernel, self.pad, self.dilation):
            if size + 2 * p < (k - 1) * d + 1:
                raise self.error(f"input {tuple(x.shape[2:])} smaller than the padded kernel")
        return [F.conv2d(_layout(x, run), w, params[1] if self.bias_term else None, self.stride,
                         self.pad, self.dilation, self.group)]


@register
class Deconvolution(_ConvBase):
    """out = s(in - 1) + ((k-1)d + 1) - 2p; weights (Cin, Cout/g, kh, kw) as Caffe stores them."""
    type = "Deconvolution"

    def param_inits(self, shapes):
        c = self._channels(shapes[0])
        return self._inits((c, self.num_output // self.group) + self.kernel)

    def forward(self, bottoms, params, run):
        x, w = bottoms[0], params[0]
        self._check_shape(x, w, w.shape[0])
        for size, k, s, p, d in zip(x.shape[2:], self.kernel, self.stride, self.pad, self.dilation):
            if s * (size - 1) + (k - 1) * d + 1 - 2 * p <= 0:
                raise self.error(f"output size not positive for input {tuple(x.shape[2:])}")
        return [F.conv_transpose2d(_layout(x, run), w, params[1] if self.bias_term else None,
                                   self.stride, self.pad, 0, self.group, self.dilation)]


def _layout(x: torch.Tensor, run) -> torch.Tensor:
    """The bottom in the memory format the pass runs convolutions in. Channels-last (NHWC
    strides, same (N, C, H, W) shape) lets oneDNN skip reordering activations into and out of
    its blocked layout; a convolution's top keeps its bottom's format, and so do ReLU, pooling,
    crops and eltwise between them, so only the first convolution converts."""
    return x.contiguous(memory_format=torch.channels_last) if run.channels_last else x


def pooled_size(size: int, k: int, p: int, s: int, ceil: bool) -> int:
    """Caffe's pooled size: ceil (or floor) division, then drop a last window starting in the pad."""
    span = size + 2 * p - k
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def ave_divisor(size: int, k: int, p: int, s: int, out: int) -> list[int]:
    """Caffe's AVE pool divisor per output index: the window clipped to the *padded* input."""
    return [min(i * s - p + k, size + p) - (i * s - p) for i in range(out)]


@register
class Pooling(Layer):
    """MAX (windows clipped to the input) and AVE (divisor counts padding) with Caffe's sizes."""
    type = "Pooling"
    fields = {"pooling_param": frozenset({
        "pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride",
        "stride_h", "stride_w", ENGINE, "global_pooling", "round_mode"})}
    METHODS = {0: "MAX", 1: "AVE"}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.pooling_param
        if p.pool not in self.METHODS:
            raise self.error("pooling_param.pool STOCHASTIC is not supported")
        self.method = self.METHODS[p.pool]
        self.ceil = p.round_mode == 0
        self.global_pooling = p.global_pooling
        has = p.HasField
        if self.global_pooling:
            if has("kernel_size") or has("kernel_h") or has("kernel_w"):
                raise self.error("global_pooling takes no kernel size")
            self.kernel = None
        elif has("kernel_size") == (has("kernel_h") and has("kernel_w")):
            raise self.error("give kernel_size or both kernel_h and kernel_w")
        else:
            self.kernel = ((p.kernel_size, p.kernel_size) if has("kernel_size")
                           else (p.kernel_h, p.kernel_w))
        if has("pad") and (has("pad_h") or has("pad_w")) or has("pad_h") != has("pad_w"):
            raise self.error("give pad or both pad_h and pad_w")
        if has("stride") and (has("stride_h") or has("stride_w")) or has("stride_h") != has("stride_w"):
            raise self.error("give stride or both stride_h and stride_w")
        self.pad = (p.pad_h, p.pad_w) if has("pad_h") else (p.pad, p.pad)
        self.stride = (p.stride_h, p.stride_w) if has("stride_h") else (p.stride, p.stride)
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.error("global_pooling needs pad 0 and stride 1")
        if min(self.stride) <= 0 or (self.kernel and min(self.kernel) <= 0):
            raise self.error("kernel size and stride must be positive")
        if self.kernel and (self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]):
            raise self.error(f"pad {self.pad} must be smaller than kernel {self.kernel}")

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        if x.dim() != 4:
            raise self.error(f"needs a 4-D bottom, got shape {tuple(x.shape)}")
        size = tuple(x.shape[2:])
        kernel = size if self.global_pooling else self.kernel
        out = tuple(pooled_size(n, k, p, s, self.ceil)
                    for n, k, p, s in zip(size, kernel, self.pad, self.stride))
        if min(out) <= 0:
            raise self.error(f"input {size} is smaller than the pooling window {kernel}")
        windows = (x.shape, kernel, self.pad, self.stride, self.ceil)
        if self.method == "MAX":
            if _torch_agrees(*windows, out):
                return [F.max_pool2d(x, kernel, self.stride, self.pad, ceil_mode=self.ceil)]
            y = F.max_pool2d(_padded(x, *windows, out, -math.inf), kernel, self.stride)
            empty = any((o - 1) * s - p >= n for o, s, p, n in zip(out, self.stride, self.pad, size))
            return [y.clamp_min(-FLT_MAX) if empty else y]
        if _torch_agrees(*windows, out):
            sums = F.avg_pool2d(x, kernel, self.stride, self.pad, ceil_mode=self.ceil,
                                divisor_override=1)
        else:
            sums = F.avg_pool2d(_padded(x, *windows, out, 0.0), kernel, self.stride,
                                divisor_override=1)
        dh, dw = (torch.tensor(ave_divisor(n, k, p, s, o), dtype=x.dtype, device=x.device)
                  for n, k, p, s, o in zip(size, kernel, self.pad, self.stride, out))
        return [sums / (dh[:, None] * dw[None, :])]


def _torch_agrees(shape, kernel, pad, stride, ceil, out) -> bool:
    """Whether torch's own padded pooling makes Caffe's windows: same count (torch drops a
    last window starting in the padding even when pad is 0, Caffe only when pad > 0), and a
    pad torch accepts (at most half the kernel). Then no padded copy of the input is needed."""
    for n, k, p, s, o in zip(shape[2:], kernel, pad, stride, out):
        span = n + 2 * p - k
        t = (-(-span // s) if ceil else span // s) + 1
        if ceil and (t - 1) * s >= n + p:
            t -= 1
        if t != o or 2 * p > k:
            return False
    return True


def _padded(x, shape, kernel, pad, stride, ceil, out, value: float) -> torch.Tensor:
    """`x` padded (or cropped) so that unpadded pooling makes exactly Caffe's `out` windows."""
    extra = [(o - 1) * s + k - n - p for o, s, k, n, p in zip(out, stride, kernel, shape[2:], pad)]
    return F.pad(x, (pad[1], extra[1], pad[0], extra[0]), value=value)


@register
class LRN(Layer):
    """ACROSS_CHANNELS: x (k + α/n Σ x²)^-β over n channels; WITHIN_CHANNEL: x (1 + α/n² Σ x²)^-β
    over an n×n patch (Caffe builds it from pooling and power layers, so k is not used there)."""
    type = "LRN"
    fields = {"lrn_param": frozenset({"local_size", "alpha", "beta", "norm_region", "k", ENGINE})}

    def __init__(self, lp, ctx):
        super().__init__(lp, ctx)
        p = lp.lrn_param
        if p.local_size % 2 == 0:
            raise self.error(f"local_size must be odd, got {p.local_size}")
        if p.norm_region == 1 and p.k != 1:
            raise self.error("lrn_param.k is not used by WITHIN_CHANNEL normalisation in Caffe")
        self.n, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.across = p.norm_region == 0

    def forward(self, bottoms, params, run):
        x = bottoms[0]
        if x.dim() != 4:
            raise self.error(f"needs a 4-D bottom, got shape {tuple(x.shape)}")
        pre = (self.n - 1) // 2
        sq = x * x
        # zero padding made explicit: torch refuses windows larger than the unpadded input
        if self.across:
            padded = F.pad(sq, (0, 0, 0, 0, pre, pre)).unsqueeze(1)
            mean = F.avg_pool3d(padded, (self.n, 1, 1), 1).squeeze(1)
            scale = self.k + self.alpha * mean
        else:
            mean = F.avg_pool2d(F.pad(sq, (pre, pre, pre, pre)), self.n, 1)
            scale = 1.0 + self.alpha * mean
        return [x * scale.pow(-self.beta)]


@register
class Crop(Layer):
    """Crop bottom 0 to bottom 1's shape on axes >= axis, starting at the given offsets."""
    type = "Crop"
    bottoms = (2, 2)
    fields = {"crop_param": frozenset({"axis", "offset"})}

    def forward(self, bottoms, params, run):
        x, like = bottoms
        p = self.lp.crop_param
        if like.dim() < x.dim():
            raise self.error(f"bottom 1 has {like.dim()} axes, fewer than bottom 0's {x.dim()}")
        axis = self.axis(p.axis, x.dim())
        n = x.dim() - axis
        if len(p.offset) not in (0, 1, n):
            raise self.error(f"crop_param.offset has {len(p.offset)} values; give 0, 1 or {n}")
        offsets = [0] * n if not p.offset else list(p.offset) * (n if len(p.offset) == 1 else 1)
        index = [slice(None)] * axis
        for i, off in enumerate(offsets):
            a = axis + i
            if x.shape[a] - off < like.shape[a]:
                raise self.error(f"crop of axis {a} out of bounds: size {x.shape[a]}, "
                                 f"offset {off}, wanted {like.shape[a]}")
            index.append(slice(off, off + like.shape[a]))
        return [x[tuple(index)]]
