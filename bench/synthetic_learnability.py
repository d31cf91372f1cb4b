"""Is the synthetic dataset learnable by a small FCN in a few CPU minutes? (run by hand)

Writes a synthetic VOC-layout set to a temp folder, reads it back through VOCSegDataLayer's
dataset, trains a small fully convolutional net with plain PyTorch (independent of fcnkit's
engine) and prints val scores next to the background-only baseline.

    python bench/synthetic_learnability.py [--train 200] [--val 50] [--iters 600] [--classes 5]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from torch import nn

from solvers.data.layers import dataset_from_layer
from solvers.data.synthetic import make_synthetic_voc
from solvers.score import fast_hist, metrics


def pixelwise(n_out: int) -> nn.Module:
    """Per-pixel colour classifier (1x1 convs only): what colour alone achieves."""
    return nn.Sequential(nn.Conv2d(3, 32, 1), nn.ReLU(), nn.Conv2d(32, n_out, 1))


def small_fcn(n_out: int) -> nn.Module:
    """Stride-4 conv net with a bilinear 4x upsampling head (~60k parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(64, n_out, 1),
        nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False))


def load_all(ds) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds.load(i) for i in range(len(ds))]
    x = torch.from_numpy(np.stack([it["data"] for it in items])) / 64.0
    y = torch.from_numpy(np.stack([it["label"][0] for it in items]).astype(np.int64))
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pixelwise", action="store_true", help="1x1-conv baseline instead")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    n = a.classes + 1
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_synthetic_voc(tmp, a.train, a.val, (64, 64), a.classes, seed=0)
        ps = "{{'voc_dir': '{}', 'split': '{}'}}"
        xt, yt = load_all(dataset_from_layer("voc_layers", "VOCSegDataLayer", ps.format(tmp, "train")))
        xv, yv = load_all(dataset_from_layer("voc_layers", "VOCSegDataLayer", ps.format(tmp, "val")))
        print(f"data: {a.train}+{a.val} images written and read in {time.perf_counter() - t0:.1f}s")
    net = (pixelwise if a.pixelwise else small_fcn)(n)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=255)
    t0 = time.perf_counter()
    for it in range(a.iters):
        idx = torch.randint(0, len(xt), (8,))
        loss = loss_fn(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (it + 1) % 100 == 0:
            print(f"iter {it + 1}: loss {loss.item():.3f}")
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        pred = net(xv).argmax(1).numpy()
    m = metrics(fast_hist(yv.numpy(), pred, n))
    base = metrics(fast_hist(yv.numpy(), np.zeros_like(pred), n))
    print(f"trained {a.iters} iters (batch 8, 64x64) in {train_s:.0f}s on {a.threads} threads")
    print(f"val mean IU {m['mean_iu']:.3f}  pixel acc {m['pixel_acc']:.3f}  "
          f"per-class IU {np.round(m['per_class_iu'], 2).tolist()}")
    print(f"background-only baseline: mean IU {base['mean_iu']:.3f} "
          f"(1/(n+1) = {1 / n:.3f}), pixel acc {base['pixel_acc']:.3f}")


if __name__ == "__main__":
    main()
