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
import math
import os
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from netgen.errors import FcnkitError
from netgen.fileio import atomic_write, remove_stale_temps
from netgen.proto import caffe_pb2
from netgen.schema import read_binary
from netgen.shapes import MAX_BLOB_AXES
from surgery import hdf5, wire

_HISTORY = 3  # SolverState.history
_BLOB_DATA, _BLOB_SHAPE = 5, 7  # BlobProto.data, BlobProto.shape
_LEGACY_DIMS = ("num", "channels", "height", "width")
_CLEANED: set[Path] = set()  # folders whose stale temp files this process has removed


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
    """Write `state` atomically; HDF5 when `path` ends in .h5, else binary protobuf.

    The first snapshot a process writes into a folder clears temp files that a killed
    earlier run left there (netgen.fileio.remove_stale_temps).
    """
    folder = Path(path).resolve().parent
    if folder not in _CLEANED:
        remove_stale_temps(folder)
        _CLEANED.add(folder)
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
    learned_net = message.learned_net
    if not isinstance(learned_net, str):  # proto2 strings are not checked when parsed
        raise FcnkitError(f"{path}: learned_net is not UTF-8 text")
    history = [blob_array(blob, f"{path}: history {i}") for i, blob in enumerate(message.history)]
    return SolverState(iter=message.iter, learned_net=learned_net,
                       current_step=message.current_step, history=history)


def blob_array(blob: caffe_pb2.BlobProto, where: str) -> np.ndarray:
    """A BlobProto's values (double_data if any, else data) as float32 in its shape (legacy
    num/channels/height/width when set); FcnkitError for shapes its values cannot fill
    (negative dims, more than Caffe's 32 axes, a product other than the value count)."""
    values = blob.double_data if len(blob.double_data) else blob.data
    if any(blob.HasField(d) for d in _LEGACY_DIMS):
        shape = [getattr(blob, d) for d in _LEGACY_DIMS]
    else:
        shape = list(blob.shape.dim)
    count = len(values)
    if (any(d < 0 for d in shape) or len(shape) > MAX_BLOB_AXES
            or math.prod(shape) != count):  # Python ints: no int64 overflow
        raise FcnkitError(f"{where}: shape {tuple(shape)} does not match its {count} values")
    return np.array(values, dtype=np.float32).reshape(shape)


def _read_hdf5(path: Path) -> SolverState:
    """Caffe's HDF5 solverstate, read through surgery.hdf5's checks (links, sizes, errors).

    `iter` and `current_step` must be one integer, `learned_net` text, `history` a group of
    float datasets 0..n-1; anything else is FcnkitError naming the file and dataset.
    """
    import h5py

    h5 = hdf5.open_hdf5(path)
    with h5, hdf5.hdf5_errors(path):
        members = dict(hdf5.hard_members(path, h5, "", set()))
        missing = [k for k in ("iter", "history") if k not in members]
        if missing:
            raise FcnkitError(f"{path}: not a Caffe HDF5 solverstate (no {', '.join(missing)})")
        history_group = members["history"]
        if not isinstance(history_group, h5py.Group):
            raise FcnkitError(f"{path}: /history is a dataset, expected a group")
        history = dict(hdf5.hard_members(path, history_group, "/history", set()))
        names = [str(i) for i in range(len(history))]
        if sorted(history) != sorted(names):
            raise FcnkitError(f"{path}: history datasets must be named 0..{len(names) - 1}")
        return SolverState(
            iter=_h5_int(path, members, "iter"),
            learned_net=_h5_text(path, members, "learned_net"),
            current_step=_h5_int(path, members, "current_step") if "current_step" in members
            else 0,
            history=[_h5_floats(path, history[n], f"/history/{n}") for n in names])


def _h5_dataset(path: Path, members: dict, name: str):
    import h5py

    dataset = members[name]
    if not isinstance(dataset, h5py.Dataset):
        raise FcnkitError(f"{path}: /{name} is a group, expected a dataset")
    return dataset


def _h5_int(path: Path, members: dict, name: str) -> int:
    """One int32 value stored as shape (1,) (Caffe) or a scalar."""
    values = hdf5.read_dataset(path, _h5_dataset(path, members, name), f"/{name}", "iu")
    if values.size != 1:
        raise FcnkitError(f"{path}: /{name} holds {values.size} values, expected one integer")
    value = int(values.reshape(-1)[0])
    if not -(1 << 31) <= value < 1 << 31:
        raise FcnkitError(f"{path}: /{name} = {value} is outside int32")
    return value


def _h5_text(path: Path, members: dict, name: str) -> str:
    """A NUL-terminated string (H5LTmake_dataset_string); '' when absent."""
    if name not in members:
        return ""
    raw = hdf5.read_dataset(path, _h5_dataset(path, members, name), f"/{name}", "S")
    if raw.size != 1:
        raise FcnkitError(f"{path}: /{name} holds {raw.size} strings, expected one")
    try:
        return bytes(raw.reshape(-1)[0]).decode("utf-8").rstrip("\0")
    except UnicodeDecodeError:
        raise FcnkitError(f"{path}: /{name} is not UTF-8 text") from None


def _h5_floats(path: Path, dataset, where: str) -> np.ndarray:
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise FcnkitError(f"{path}: {where} is a group, expected a dataset")
    return hdf5.read_dataset(path, dataset, where, "f").astype(np.float32, copy=False)


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
