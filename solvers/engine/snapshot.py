"""Solver snapshots: file names and the solver state (.solverstate / .solverstate.h5).

Layouts are Caffe's. Binary: a SolverState message (iter 1, learned_net 2, history 3 as one
BlobProto per history slot, current_step 4). HDF5 (sgd_solver.cpp
SnapshotSolverStateToHDF5): datasets `iter` (int32[1]), `learned_net` (NUL-terminated string),
`current_step` (int32[1]) and group `history` with datasets "0", "1", ... (float32, the
blob's shape). Which reader is used depends on the ".h5" suffix, as in Caffe's Restore.

History payloads are streamed straight from the arrays' memory (protobuf's repeated-float
extend costs ~0.3 s per million values, a minute for FCN-VGG); everything else goes through
protobuf. Every file is written atomically.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from netgen.errors import FcnkitError
from netgen.fileio import atomic_write
from netgen.proto import caffe_pb2
from netgen.schema import read_binary
from surgery import wire

_HISTORY = 3  # SolverState.history
_BLOB_DATA, _BLOB_SHAPE = 5, 7  # BlobProto.data, BlobProto.shape
_LEGACY_DIMS = ("num", "channels", "height", "width")


@dataclasses.dataclass
class SolverState:
    """What a solverstate holds: iteration, weights file, lr-policy step, history arrays."""

    iter: int
    learned_net: str
    current_step: int
    history: list[np.ndarray]


def snapshot_filename(prefix: str, it: int, extension: str) -> str:
    """Caffe's Solver::SnapshotFilename: <prefix>_iter_<N><extension>."""
    return f"{prefix}_iter_{it}{extension}"


def is_hdf5_path(path: str | os.PathLike) -> bool:
    return str(path).endswith(".h5")


# ---------------------------------------------------------------------------------- writing

def write_solverstate(path: str | os.PathLike, state: SolverState) -> None:
    """Write `state` atomically; HDF5 when `path` ends in .h5, else binary protobuf."""
    if is_hdf5_path(path):
        _write_hdf5(Path(path), state)
        return
    header = caffe_pb2.SolverState(iter=state.iter, learned_net=state.learned_net,
                                   current_step=state.current_step)
    low, high = wire.split_fields(header.SerializeToString(), _HISTORY)
    with atomic_write(path, "wb") as f:
        f.write(low)
        for array in state.history:
            _write_blob(f, array)
        f.write(high)


def _write_blob(f: BinaryIO, array: np.ndarray) -> None:
    """One history entry: field 3 holding BlobProto {data (packed float), shape}."""
    data = np.ascontiguousarray(array, dtype="<f4").reshape(-1)
    shape = wire.encode_len_field(_BLOB_SHAPE, wire.encode_packed_varints(1, array.shape))
    payload = wire.encode_len_prefix(_BLOB_DATA, data.nbytes) if data.size else b""
    f.write(wire.encode_len_prefix(_HISTORY, len(payload) + data.nbytes + len(shape)))
    f.write(payload)
    f.write(data.view(np.uint8))
    f.write(shape)


def _write_hdf5(path: Path, state: SolverState) -> None:
    import h5py

    with atomic_write(path, "w+b") as f, h5py.File(f, "w", track_order=True) as h5:
        h5.create_dataset("iter", data=np.array([state.iter], dtype=np.int32))
        _write_c_string(h5, "learned_net", state.learned_net)
        h5.create_dataset("current_step", data=np.array([state.current_step], dtype=np.int32))
        history = h5.create_group("history", track_order=True)
        for i, array in enumerate(state.history):
            history.create_dataset(str(i), data=np.asarray(array, dtype=np.float32))


def _write_c_string(h5, name: str, text: str) -> None:
    """A scalar fixed-length NUL-terminated string, as HDF5's H5LTmake_dataset_string writes."""
    import h5py

    raw = text.encode("utf-8") + b"\0"
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(raw))
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    dataset = h5py.h5d.create(h5.id, name.encode(), string_type,
                              h5py.h5s.create(h5py.h5s.SCALAR))
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"))


# ---------------------------------------------------------------------------------- reading

def read_solverstate(path: str | os.PathLike) -> SolverState:
    """Read a binary or HDF5 solverstate (by suffix, as Caffe); FcnkitError when unreadable."""
    if is_hdf5_path(path):
        return _read_hdf5(Path(path))
    message = read_binary(path, caffe_pb2.SolverState)
    history = [_blob_array(blob, f"{path}: history {i}") for i, blob in enumerate(message.history)]
    return SolverState(iter=message.iter, learned_net=message.learned_net,
                       current_step=message.current_step, history=history)


def _blob_array(blob: caffe_pb2.BlobProto, where: str) -> np.ndarray:
    values = blob.double_data if len(blob.double_data) else blob.data
    if any(blob.HasField(d) for d in _LEGACY_DIMS):
        shape = [getattr(blob, d) for d in _LEGACY_DIMS]
    else:
        shape = list(blob.shape.dim)
    data = np.array(values, dtype=np.float32)
    if int(np.prod(shape, dtype=np.int64)) != data.size:
        raise FcnkitError(f"{where}: shape {tuple(shape)} does not match its {data.size} values")
    return data.reshape(shape)


def _read_hdf5(path: Path) -> SolverState:
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except FileNotFoundError:
        raise FcnkitError(f"{path}: no such file") from None
    except OSError as e:
        raise FcnkitError(f"{path}: unreadable HDF5 file ({e})") from None
    with h5:
        missing = [k for k in ("iter", "history") if k not in h5]
        if missing:
            raise FcnkitError(f"{path}: not a Caffe HDF5 solverstate (no {', '.join(missing)})")
        history_group = h5["history"]
        count = len(history_group)
        names = [str(i) for i in range(count)]
        if sorted(history_group) != sorted(names):
            raise FcnkitError(f"{path}: history datasets must be named 0..{count - 1}")
        learned = h5["learned_net"][()] if "learned_net" in h5 else b""
        return SolverState(
            iter=int(np.asarray(h5["iter"][()]).reshape(-1)[0]),
            learned_net=(learned.decode("utf-8") if isinstance(learned, bytes)
                         else str(learned)).rstrip("\0"),
            current_step=(int(np.asarray(h5["current_step"][()]).reshape(-1)[0])
                          if "current_step" in h5 else 0),
            history=[np.asarray(history_group[n][()], dtype=np.float32) for n in names])


def check_history_shapes(history: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]],
                         where: str) -> list[np.ndarray]:
    """Match saved history to the solver's slots; counts must agree, shapes by element count
    (legacy 4-d dims hold the same values as the real shape, as Caffe's FromProto allows)."""
    if len(history) != len(shapes):
        raise FcnkitError(f"{where}: holds {len(history)} history blobs, this solver and net "
                          f"need {len(shapes)} (different net or solver type?)")
    out = []
    for i, (array, shape) in enumerate(zip(history, shapes)):
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise FcnkitError(f"{where}: history {i} has shape {tuple(array.shape)}, "
                              f"the net's parameter has {tuple(shape)}")
        out.append(array.reshape(shape))
    return out
