"""Segment images with a deploy net: Caffe's input transform, one forward per image, argmax.

The transform is the reference one: RGB -> BGR, float32, minus the per-channel mean,
HWC -> CHW; the net is reshaped to each image, and the label map is the argmax over the
class axis of the `score` blob. Three backends run the same deploy.prototxt + caffemodel:
fcnkit's PyTorch engine ("torch"), pycaffe ("caffe") and OpenCV's Caffe importer
("opencv", cv2.dnn.readNetFromCaffe), the last being an implementation fcnkit does not share
any code with; "onnxruntime" runs the net exported to ONNX (solvers.onnx_backend).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from netgen.errors import FcnkitError
from netgen.fileio import atomic_write
from netgen.proto import caffe_pb2
from netgen.schema import read_net
from surgery.caffemodel import load_weights_for
from netgen.legacy import upgrade_net

from .data.readers import to_caffe_input

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
                 backend: str = "torch", gpu: int | None = None, output: str = OUTPUT) -> None:
        if backend not in BACKENDS:
            raise FcnkitError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.deploy, self.weights = Path(deploy), Path(weights)
        for what, path in (("deploy net", self.deploy), ("weights", self.weights)):
            if not path.is_file():
                raise FcnkitError(f"{what} {path}: no such file")
        net_param = read_net(self.deploy)
        self.input = net_io(net_param, output, str(self.deploy))
        self.output = output
        self.backend = backend
        self.num_classes: int | None = None  # known after the first image
        if self.weights.suffix == ".onnx" and backend != "onnxruntime":
            raise FcnkitError(f"{self.weights}: an ONNX file runs with --backend onnxruntime")
        if backend != "torch" and self.weights.suffix != ".onnx":  # Caffe and OpenCV abort or
            load_weights_for(self.weights, net_param)               # throw late: check first
        self._run: Callable[[np.ndarray], np.ndarray] = getattr(self, f"_{backend}")(gpu)

    def _torch(self, gpu: int | None) -> Callable[[np.ndarray], np.ndarray]:
        from . import torch_backend

        net = torch_backend.load_net(self.deploy, self.weights, gpu)

        def run(x: np.ndarray) -> np.ndarray:
            net.forward(**{self.input: x[np.newaxis]})
            return np.array(net.blobs[self.output].data[0])
        return run

    def _caffe(self, gpu: int | None) -> Callable[[np.ndarray], np.ndarray]:
        from . import caffe_backend

        net = caffe_backend.load_net(self.deploy, self.weights, gpu)

        def run(x: np.ndarray) -> np.ndarray:
            net.blobs[self.input].reshape(1, *x.shape)
            net.blobs[self.input].data[...] = x
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

        def run(x: np.ndarray) -> np.ndarray:
            net.setInput(x[np.newaxis], self.input)
            try:
                return np.array(net.forward(self.output)[0])
            except cv2.error as e:
                raise FcnkitError(f"OpenCV failed on {self.deploy}: "
                                  f"{str(e).strip().splitlines()[-1]}") from None
        return run

    def _onnxruntime(self, gpu: int | None) -> Callable[[np.ndarray], np.ndarray]:
        from .onnx_backend import load_runner

        return load_runner(self.deploy, self.weights, self.input, self.output, gpu)

    def scores(self, chw: np.ndarray) -> np.ndarray:
        """Class scores (C x H x W) of one preprocessed image (3 x H x W, BGR minus mean)."""
        return self._run(np.ascontiguousarray(chw, dtype=np.float32))

    def labels(self, rgb: np.ndarray, mean: Any) -> np.ndarray:
        """HxW uint8 label map of an HxWx3 RGB image."""
        scores = self.scores(to_caffe_input(rgb, mean))
        if scores.ndim != 3 or scores.shape[1:] != rgb.shape[:2]:
            raise FcnkitError(f"{self.deploy}: {self.output!r} has shape {scores.shape}, expected "
                              f"C x {rgb.shape[0]} x {rgb.shape[1]} (the image size)")
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
