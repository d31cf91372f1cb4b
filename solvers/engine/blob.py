"""Blob and Param: pycaffe-style numpy windows onto the torch tensors the engine computes with.

A Blob names one value flowing through the net. Its `.data` is a numpy *view* of the tensor
when the tensor lives on the CPU (so `blob.data[...] = x` writes through) and a *copy* on CUDA.
Input blobs (tops of Input and Python data layers) always live on the host, whatever the
net's device, so that `net.blobs['data'].data[...] = img` works everywhere; the net moves them
to its device at the start of each forward.

A Param is one learnable array of a layer (weights, bias, BatchNorm statistics). `.tensor` is
the torch.nn.Parameter the engine trains; `.diff` is its accumulated gradient, like Caffe's
param diff (summed over backward passes until cleared).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy window on `t`: a view for CPU float32/float64, else a float32 CPU copy."""
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.numpy()


def _write(t: torch.Tensor, value) -> None:
    """Copy `value` (array or scalar, broadcastable) into `t` in place."""
    with torch.no_grad():
        t.copy_(torch.as_tensor(np.asarray(value), dtype=t.dtype).expand(t.shape))


class Blob:
    """One named value of the net: `.tensor` (torch), `.data`/`.diff` (numpy), `.shape`, `.reshape()`.

    `.diff` of an activation blob exists only after a backward run with
    `net.retain_blob_diffs = True` (keeping every activation gradient costs as much memory as
    the activations); input blobs and Python-layer tops keep their own host diff buffers.
    """

    def __init__(self, name: str, tensor: torch.Tensor, *, host: bool = False,
                 device: torch.device | str = "cpu"):
        self.name = name
        self.host = host  # lives on the CPU, written by the user or a data layer
        self._device = torch.device("cpu") if host else torch.device(device)
        self._tensor = tensor
        self._diff: torch.Tensor | None = torch.zeros_like(tensor) if host else None

    @property
    def tensor(self) -> torch.Tensor:
        return self._tensor

    @tensor.setter
    def tensor(self, value: torch.Tensor) -> None:
        self._tensor = value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._tensor.shape)

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _legacy(self, i: int) -> int:
        shape = self.shape
        return shape[i] if i < len(shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def _materialise(self) -> torch.Tensor:
        """Blobs whose shape is known but not yet computed (after init/reshape) read as zeros."""
        if self._tensor.is_meta:
            self._tensor = torch.zeros(self._tensor.shape, dtype=self._tensor.dtype,
                                       device=self._device)
        return self._tensor

    @property
    def data(self) -> np.ndarray:
        return _numpy(self._materialise())

    @data.setter
    def data(self, value) -> None:
        _write(self._materialise(), value)

    @property
    def diff(self) -> np.ndarray:
        if self._diff is None:
            raise RuntimeError(f"blob {self.name!r} has no diff: set net.retain_blob_diffs = True "
                               "before backward to keep activation gradients")
        return _numpy(self._diff)

    @diff.setter
    def diff(self, value) -> None:
        if self._diff is None:
            self._diff = torch.zeros_like(self._materialise())
        _write(self._diff, value)

    def reshape(self, *shape: int | Sequence[int]) -> None:
        """Give the blob a new shape (contents zeroed), as pycaffe's Blob.reshape."""
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = tuple(shape[0])
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise ValueError(f"blob {self.name!r}: negative dimension in {dims}")
        if dims == self.shape and not self._tensor.is_meta:
            return
        self._tensor = torch.zeros(dims, dtype=self._tensor.dtype, device=self._device)
        if self._diff is not None:
            self._diff = torch.zeros_like(self._tensor)

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, shape={self.shape})"


class Param:
    """One learnable array: `.tensor` (nn.Parameter), `.data`/`.diff` numpy, lr/decay multipliers.

    `name` is the `param { name }` used for sharing ('' when unshared); `owner` is
    (layer name, blob index) of the layer that created it. Shared params are one object
    appearing in every sharing layer's list. `.diff` is the accumulated gradient (zeros
    before any backward); on CUDA both `.data` and `.diff` are copies, assign to write back.
    """

    def __init__(self, tensor: torch.Tensor, *, name: str, owner: tuple[str, int],
                 lr_mult: float, decay_mult: float):
        self.tensor = torch.nn.Parameter(tensor, requires_grad=lr_mult != 0)
        self.name = name
        self.owner = owner
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult
        self.exposed = 0  # numpy views handed out (writable behind torch's version counter)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def count(self) -> int:
        return int(self.tensor.numel())

    @property
    def data(self) -> np.ndarray:
        self.exposed += 1
        return _numpy(self.tensor)

    @data.setter
    def data(self, value) -> None:
        _write(self.tensor, value)

    def _grad(self) -> torch.Tensor:
        if self.tensor.grad is None:
            self.tensor.grad = torch.zeros_like(self.tensor)
        return self.tensor.grad

    @property
    def diff(self) -> np.ndarray:
        return _numpy(self._grad())

    @diff.setter
    def diff(self, value) -> None:
        _write(self._grad(), value)

    def __repr__(self) -> str:
        return f"Param({self.owner[0]}[{self.owner[1]}], shape={self.shape}, lr_mult={self.lr_mult})"
