"""Segment images with a deploy net: Caffe's input transform, one forward per image, argmax.

The transform is the reference one: RGB -> BGR, float32, minus the per-channel mean,
HWC -> CHW; the net is reshaped to each image, and the label map is the argmax over the
class axis of the `score` blob. Three backends run the same deploy.prototxt + caffemodel:
fcnkit's PyTorch engine ("torch"), pycaffe ("caffe") and OpenCV's Caffe importer
("opencv", cv2.dnn.readNetFromCaffe), the last being an implementation fcnkit does not share
any code with; "onnxruntime" runs the net exported to ONNX (solvers.onnx_backend).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from netgen.errors import FcnkitError
from netgen.fileio import atomic_write
from netgen.proto import caffe_pb2
from netgen.schema import read_net
from surgery.caffemodel import load_weights_for
from netgen.legacy import upgrade_net

from .data.readers import to_caffe_input
from .preprocess import input_tops

if TYPE_CHECKING:
    from .tiles import Tiler

BACKENDS = ("torch", "caffe", "opencv", "onnxruntime")
OUTPUT = "score"


def net_io(deploy: caffe_pb2.NetParameter, output: str, where: str) -> str:
    """The image input blob of a deploy net (first Input top); checks `output` is a top."""
    net = upgrade_net(deploy)
    inputs = [top for layer in net.layer if layer.type == "Input" for top in layer.top]
    if not inputs:
        raise FcnkitError(f"{where}: no Input layer; a deploy net reads its image from one")
    tops = [top for layer in net.layer for top in layer.top]
    if output not in tops:
        consumed = {b for layer in net.layer for b in layer.bottom}
        ends = [t for t in dict.fromkeys(tops) if t not in consumed]
        raise FcnkitError(f"{where}: no blob {output!r} to take the argmax of "
                          f"(outputs of this net: {', '.join(ends)})")
    return inputs[0]


class Predictor:
    """A deploy net with trained weights on one backend; `scores(chw)` -> CxHxW class scores."""

    def __init__(self, deploy: str | os.PathLike, weights: str | os.PathLike,
                 backend: str = "torch", gpu: int | None = None, output: str = OUTPUT,
                 amp: str | None = None) -> None:
        """amp: "bf16"/"fp16" runs the torch engine in mixed precision (scores in float32)."""
        if backend not in BACKENDS:
            raise FcnkitError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.deploy, self.weights = Path(deploy), Path(weights)
        for what, path in (("deploy net", self.deploy), ("weights", self.weights)):
            if not path.is_file():
                raise FcnkitError(f"{what} {path}: no such file")
        net_param = read_net(self.deploy)
        self.input = net_io(net_param, output, str(self.deploy))
        self.inputs = input_tops(net_param)  # every Input top; multi-input nets take a dict
        self.output = output
        self.backend = backend
        self.num_classes: int | None = None  # known after the first image
        if self.weights.suffix == ".onnx" and backend != "onnxruntime":
            raise FcnkitError(f"{self.weights}: an ONNX file runs with --backend onnxruntime")
        if backend != "torch" and self.weights.suffix != ".onnx":  # Caffe and OpenCV abort or
            load_weights_for(self.weights, net_param)               # throw late: check first
        if amp is not None and backend != "torch":
            raise FcnkitError(f"--amp {amp}: mixed precision runs on the torch backend only")
        self.amp = amp
        self._run: Callable[[np.ndarray], np.ndarray] = getattr(self, f"_{backend}")(gpu)

    def _torch(self, gpu: int | None) -> Callable[[np.ndarray], np.ndarray]:
        from . import torch_backend

        net = torch_backend.load_net(self.deploy, self.weights, gpu, self.amp)

        def run(x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
            feeds = x if isinstance(x, dict) else {self.input: x}
            net.forward(**{top: v[np.newaxis] for top, v in feeds.items()})
            return np.array(net.blobs[self.output].data[0])
        return run

    def _caffe(self, gpu: int | None) -> Callable[[np.ndarray], np.ndarray]:
        from . import caffe_backend

        net = caffe_backend.load_net(self.deploy, self.weights, gpu)

        def run(x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
            for top, v in (x if isinstance(x, dict) else {self.input: x}).items():
                net.blobs[top].reshape(1, *v.shape)
                net.blobs[top].data[...] = v
            net.forward()
            return np.array(net.blobs[self.output].data[0])
        return run

    def _opencv(self, gpu: int | None) -> Callable[[np.ndarray], np.ndarray]:
        import cv2

        if gpu is not None:
            raise FcnkitError("--gpu: the opencv backend runs on the CPU only")
        try:
            net = cv2.dnn.readNetFromCaffe(str(self.deploy), str(self.weights))
        except cv2.error as e:
            raise FcnkitError(f"OpenCV cannot load {self.deploy} with {self.weights}: "
                              f"{str(e).strip().splitlines()[-1]}") from None

        def run(x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
            for top, v in (x if isinstance(x, dict) else {self.input: x}).items():
                net.setInput(v[np.newaxis], top)
            try:
                return np.array(net.forward(self.output)[0])
            except cv2.error as e:
                raise FcnkitError(f"OpenCV failed on {self.deploy}: "
                                  f"{str(e).strip().splitlines()[-1]}") from None
        return run

    def _onnxruntime(self, gpu: int | None) -> Callable[[np.ndarray], np.ndarray]:
        from .onnx_backend import load_runner

        return load_runner(self.deploy, self.weights, self.input, self.output, gpu)

    def scores(self, chw: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """Class scores (C x H x W) of one preprocessed image (3 x H x W, BGR minus mean), or
        of one blob per input, {Input top: C x H x W} (solvers.preprocess)."""
        if not isinstance(chw, dict):
            return self._run(np.ascontiguousarray(chw, dtype=np.float32))
        if sorted(chw) != sorted(self.inputs):
            raise FcnkitError(f"{self.deploy}: takes inputs {', '.join(self.inputs)}, got "
                              f"{', '.join(chw) or 'none'}")
        feeds = {top: np.ascontiguousarray(v, dtype=np.float32) for top, v in chw.items()}
        return self._run(feeds[self.input] if len(feeds) == 1 else feeds)

    @functools.cached_property
    def tiler(self) -> "Tiler":
        """The deploy net's tiling (solvers.tiles), for images larger than a tile."""
        from .tiles import Tiler

        try:
            return Tiler(upgrade_net(read_net(self.deploy)), self.inputs, self.output)
        except FcnkitError as e:
            raise FcnkitError(f"{self.deploy}: {e} (--tile 0 runs whole images)") from None

    def labels(self, rgb: np.ndarray, mean: Any, tile: int | None = None) -> np.ndarray:
        """HxW uint8 label map of an HxWx3 RGB image; with `tile`, an image with a side over
        `tile` pixels goes through the net in windows of at most tile x tile (solvers.tiles:
        the same labels, memory bounded by the window)."""
        return self.labels_of({self.input: to_caffe_input(rgb, mean)}, rgb.shape[:2], tile)

    def labels_of(self, feeds: dict[str, np.ndarray], size: tuple[int, ...],
                  tile: int | None = None) -> np.ndarray:
        """HxW uint8 label map of preprocessed inputs {Input top: C x H x W}, one per input
        of the net, each H x W = `size`; `tile` as for labels."""
        if tile and max(size) > tile:
            labels, self.num_classes = self.tiler.labels(self.scores, feeds, tile)
            return labels
        scores = self.scores(feeds)
        if scores.ndim != 3 or scores.shape[1:] != tuple(size):
            raise FcnkitError(f"{self.deploy}: {self.output!r} has shape {scores.shape}, expected "
                              f"C x {size[0]} x {size[1]} (the image size)")
        if scores.shape[0] > 256:
            raise FcnkitError(f"{self.deploy}: {scores.shape[0]} classes do not fit a label PNG")
        self.num_classes = scores.shape[0]
        return scores.argmax(0).astype(np.uint8)


def save_prediction(out: Path, stem: str, rgb: np.ndarray, label: np.ndarray,
                    names: list[str] | None = None, alpha: float = 0.5) -> tuple[Path, Path]:
    """Write out/<stem>.png (palette label PNG) and out/<stem>_overlay.png (legend included)."""
    from .palette import label_image, overlay

    files = (out / f"{stem}.png", out / f"{stem}_overlay.png")
    for path, image in zip(files, (label_image(label), overlay(rgb, label, names, alpha))):
        with atomic_write(path, "wb") as f:
            image.save(f, format="PNG")
    return files
