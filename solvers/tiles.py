"""Segment a large image window by window, with the same result as one forward pass.

A whole-image forward holds every layer's activations for all pixels at once (the width-1/16
demo FCN-8s takes GBs on a 3000x3000 image, a full-width one tens of GBs). Here the image is cut
into windows of at most `tile` x `tile` pixels; each window keeps a core that its neighbours do
not, and a margin around it covering everything the core's scores read (netgen.field.reach:
the deploy net's exact input interval of a `score` pixel, which includes FCN's pad-100 and
Crop geometry). Windows start on multiples of the net's period (netgen.field), so every
layer's grid, pooling cells and crop offsets fall where the whole-image pass puts them. At the
image border a window ends where the image ends, with the net's own padding as in the whole
pass. So a core pixel sees exactly the inputs and the arithmetic it sees in the whole image:
the stitched scores equal the whole-image scores (to float rounding; a test checks the argmax).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence, Union

import numpy as np

from netgen.errors import FcnkitError
from netgen.field import Reach, reach
from netgen.proto import caffe_pb2


Inputs = Union[np.ndarray, Mapping[str, np.ndarray]]  # C x H x W, or one per Input top


def _size(inputs: Inputs) -> tuple[int, int]:
    sizes = {v.shape[1:] for v in (inputs.values() if isinstance(inputs, Mapping) else [inputs])}
    if len(sizes) != 1:
        raise FcnkitError(f"inputs of different sizes cannot be tiled alike: {sorted(sizes)}")
    return next(iter(sizes))  # type: ignore[return-value]


@dataclass(frozen=True)
class Span:
    """One axis of a tile: the window [start, stop) fed to the net, the core [keep, keep_stop)
    written to the output."""

    start: int
    stop: int
    keep: int
    keep_stop: int


def spans(size: int, tile: int, before: int, after: int, period: int) -> list[Span]:
    """Windows of at most `tile` pixels along an axis of `size` pixels whose cores tile it.

    Cores are multiples of `period` long and start on multiples of it; each window reaches
    `before`/`after` pixels (rounded up to the period before) past its core, or to the border.
    Raises FcnkitError when `tile` leaves no core.
    """
    if size <= tile:
        return [Span(0, size, 0, size)]
    lead = -(-before // period) * period
    core = (tile - lead - after) // period * period
    if core < period:
        raise FcnkitError(f"--tile {tile}: too small for this net, whose score pixels read "
                          f"{before} pixels before and {after} after them on windows aligned to "
                          f"{period} pixels; use at least {lead + after + period}")
    return [Span(max(0, c - lead), min(size, c + core + after), c, min(size, c + core))
            for c in range(0, size, core)]


class Tiler:
    """The tiling of one deploy net: its output's reach, and windows for an image size."""

    def __init__(self, net: caffe_pb2.NetParameter, data: str | Sequence[str],
                 output: str) -> None:
        self.reach: Reach = reach(net, data, output)
        if self.reach.scale != (1, 1):
            raise FcnkitError(f"cannot tile: {output!r} is not at the input's resolution "
                              f"(scale {self.reach.scale[0]} x {self.reach.scale[1]})")

    def tiles(self, height: int, width: int, tile: int) -> list[tuple[Span, Span]]:
        """(rows, columns) windows covering an H x W image, row-major."""
        r = self.reach
        rows = spans(height, tile, r.before[0], r.after[0], r.period[0])
        cols = spans(width, tile, r.before[1], r.after[1], r.period[1])
        return [(y, x) for y in rows for x in cols]

    def run(self, scores: Callable[[Inputs], np.ndarray], inputs: Inputs,
            tile: int) -> Iterator[tuple[Span, Span, np.ndarray]]:
        """(rows, columns, C x core_h x core_w scores) of each window of a C x H x W input, or
        of {Input top: C x H x W} inputs of one size (cut alike)."""
        for y, x in self.tiles(*_size(inputs), tile):
            cut = lambda v: v[:, y.start:y.stop, x.start:x.stop]
            out = scores({k: cut(v) for k, v in inputs.items()} if isinstance(inputs, Mapping)
                         else cut(inputs))
            expected = (y.stop - y.start, x.stop - x.start)
            if out.ndim != 3 or out.shape[1:] != expected:
                raise FcnkitError(f"window of {expected[0]} x {expected[1]} gave scores of shape "
                                  f"{out.shape}, expected C x {expected[0]} x {expected[1]}")
            yield y, x, out[:, y.keep - y.start:y.keep_stop - y.start,
                            x.keep - x.start:x.keep_stop - x.start]

    def scores(self, scores: Callable[[Inputs], np.ndarray], inputs: Inputs,
               tile: int) -> np.ndarray:
        """C x H x W scores of the inputs (as for run), stitched from windows."""
        out: np.ndarray | None = None
        for y, x, part in self.run(scores, inputs, tile):
            if out is None:
                out = np.empty((part.shape[0], *_size(inputs)), dtype=part.dtype)
            out[:, y.keep:y.keep_stop, x.keep:x.keep_stop] = part
        assert out is not None
        return out

    def labels(self, scores: Callable[[Inputs], np.ndarray], inputs: Inputs,
               tile: int) -> tuple[np.ndarray, int]:
        """(H x W argmax of the scores, class count), window by window: memory holds one
        window's scores, never the whole image's."""
        out = np.empty(_size(inputs), dtype=np.uint8)
        classes = 0
        for y, x, part in self.run(scores, inputs, tile):
            if part.shape[0] > 256:
                raise FcnkitError(f"{part.shape[0]} classes do not fit a label PNG")
            classes = part.shape[0]
            out[y.keep:y.keep_stop, x.keep:x.keep_stop] = part.argmax(0)
        return out, classes
