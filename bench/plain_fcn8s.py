"""FCN-8s (VOC) as a plain PyTorch function: the ceiling the engine is measured against.

The same layers as netgen's voc-fcn8s deploy net (VGG16 trunk with conv1_1 pad 100 and
ceil-mode pooling, fc6/fc7 as 7x7/1x1 convolutions, score_pool4/score_pool3 skips, bilinear
Deconvolution upsampling, crops 5, 9, 31) written straight in torch.nn.functional, with
nothing of the engine in between: no prototxt, no blobs, no autocast. Weights come from an
engine Net so both compute the same function (bench_engine checks they agree).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# VGG16 blocks: (convolutions, channels); every block ends in a 2x2 stride-2 ceil-mode max pool
VGG16 = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
CROPS = {"score_pool4c": 5, "score_pool3c": 9, "score": 31}


def weights_of(net, dtype: torch.dtype = torch.float32, channels_last: bool = False,
               requires_grad: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """{layer: (weight, bias or None)} copied from an engine Net's params, in `dtype`,
    4-D weights channels-last if asked."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = {}
    for rec in net.layers:
        if not rec.params:
            continue
        ts = [p.tensor.detach().to(dtype).contiguous(memory_format=fmt if p.tensor.dim() == 4
                                                      else torch.contiguous_format)
              .requires_grad_(requires_grad) for p in rec.params]
        out[rec.name] = (ts[0], ts[1] if len(ts) > 1 else None)
    return out


def _crop(x: torch.Tensor, like: torch.Tensor, offset: int) -> torch.Tensor:
    return x[:, :, offset:offset + like.shape[2], offset:offset + like.shape[3]]


def fcn8s(w: dict, x: torch.Tensor) -> torch.Tensor:
    """score (N, 21, H, W) of images x (N, 3, H, W), in x's dtype and memory format."""
    h, pools = x, []
    for b, (n, _) in enumerate(VGG16, 1):
        for i in range(1, n + 1):
            h = F.relu(F.conv2d(h, *w[f"conv{b}_{i}"], padding=100 if b == i == 1 else 1))
        h = F.max_pool2d(h, 2, 2, ceil_mode=True)
        pools.append(h)
    h = F.relu(F.conv2d(h, *w["fc6"]))
    h = F.relu(F.conv2d(h, *w["fc7"]))
    up = F.conv_transpose2d(F.conv2d(h, *w["score_fr"]), w["upscore2"][0], stride=2)
    up = up + _crop(F.conv2d(pools[3], *w["score_pool4"]), up, CROPS["score_pool4c"])
    up = F.conv_transpose2d(up, w["upscore_pool4"][0], stride=2)
    up = up + _crop(F.conv2d(pools[2], *w["score_pool3"]), up, CROPS["score_pool3c"])
    up = F.conv_transpose2d(up, w["upscore8"][0], stride=8)
    return _crop(up, x, CROPS["score"])
