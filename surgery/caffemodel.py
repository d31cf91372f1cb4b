"""Caffe weights files: binary caffemodels (current `layer` and legacy V1 `layers`) and HDF5.

Blob payloads never pass through protobuf: the file is memory-mapped, each packed float field is
sliced with np.frombuffer and copied once into its array, and on writing the payload goes from
the array's memory straight into the file. Only the small per-layer definitions (name, type,
options) are parsed and written with protobuf. A 528 MB VGG16 file so loads and saves in about
the time it takes to copy it, with peak memory about twice its size.
"""
from __future__ import annotations

import math
import mmap
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np
from google.protobuf.message import DecodeError

from netgen.errors import FcnkitError
from netgen.fileio import atomic_write
from netgen.proto import caffe_pb2
from netgen.shapes import MAX_BLOB_AXES

from . import hdf5, wire
from netgen.legacy import (V0_TYPE_NAMES, V1_TYPE_NAMES, downgrade_net, is_repeated, upgrade_net,
                           v1_type_enum)
from .wire import I32, I64, LEN, VARINT, WireError

FORMATS = ("binary", "hdf5")

# Field numbers (caffe.proto): NetParameter.layer / .layers, where each keeps its blobs.
NET_LAYER, NET_LAYERS = 100, 2
_BLOBS_OF = {NET_LAYER: 7, NET_LAYERS: 6}
_NAME_OF = {NET_LAYER: 1, NET_LAYERS: 4}
_V0_LAYER, _V0_BLOBS, _V0_NAME = 1, 50, 1
# BlobProto
_NUM, _CHANNELS, _HEIGHT, _WIDTH, _DATA, _SHAPE, _DOUBLE_DATA = 1, 2, 3, 4, 5, 7, 8
_LEGACY_DIMS = (_NUM, _CHANNELS, _HEIGHT, _WIDTH)
_WRITE_CHUNK = 1 << 22  # elements converted at a time when an array is not float32 already
# Packed little-endian floats can be read from the file straight into float32 arrays.
_DIRECT_READ = hasattr(os, "preadv") and sys.byteorder == "little"


class Weights(OrderedDict):
    """Layer name -> list of float32 parameter arrays, in file order.

    Only layers that carry parameters are keys. Alongside:
      types:  layer name -> Caffe type string ("Convolution"; V1 enums already translated)
      net:    the layer definitions the file carried, blobs stripped (None for HDF5 files)
      legacy: (layer, index) of blobs stored with legacy 4-d num/channels/height/width dims
      blobless: layers the file defines without any blob (binary: a layer message with no
              blobs; HDF5: an empty layer group). Copying into a net, Caffe matches them by
              name too and aborts where the net's layer has parameters (blob count 0 vs N;
              CopyTrainedLayersFromHDF5 alike), so they are recorded as read, not derived
    """

    def __init__(self, *args, types: dict[str, str] | None = None,
                 net: caffe_pb2.NetParameter | None = None,
                 legacy: set[tuple[str, int]] | None = None,
                 blobless: set[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.types: dict[str, str] = dict(types or {})
        self.net = net
        self.legacy: set[tuple[str, int]] = set(legacy or ())
        self.blobless: set[str] = set(blobless or ())

    @property
    def param_count(self) -> int:
        return sum(a.size for arrays in self.values() for a in arrays)

    def copy(self, deep: bool = True) -> "Weights":
        """A copy with its own lists and net definition; arrays copied too when `deep`."""
        net = None
        if self.net is not None:
            net = caffe_pb2.NetParameter()
            net.CopyFrom(self.net)
        return Weights(((k, [a.copy() if deep else a for a in v]) for k, v in self.items()),
                       types=self.types, net=net, legacy=self.legacy,
                       blobless=self.blobless)

    def __repr__(self) -> str:
        return f"<Weights: {len(self)} layers, {self.param_count:,} parameters>"


# ---------------------------------------------------------------------------------- reading

def load_weights(path: str | os.PathLike) -> Weights:
    """Read a caffemodel: binary (current or V1 format) or HDF5, told apart by content."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FcnkitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FcnkitError(f"{path}: is a folder, not a caffemodel") from None
    with f:
        head = f.read(len(hdf5.SIGNATURE))
        if head == hdf5.SIGNATURE:
            return _load_hdf5(path)
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise FcnkitError(f"{path}: empty file, not a caffemodel")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        problem = None
        try:
            weights = _decode_net(buf, size, f.fileno())
        except WireError as e:
            problem = _explain(buf, size, e)
        except DecodeError as e:
            problem = f"corrupt layer definition ({e})"
        finally:
            _close(buf)
    if problem is None and not weights.net.layer and not weights.net.layers:
        problem = ("no layers found" + (": this looks like a text file (a prototxt?), not a "
                                         "binary caffemodel" if _is_text(path) else
                                         ", so not a caffemodel (a mean or solver file?)"))
    if problem:
        raise FcnkitError(f"{path}: {problem}")
    _resolve_legacy(weights)
    return weights


def _resolve_legacy(weights: Weights) -> None:
    """Give legacy 4-d blobs their real shapes where the file's own layer definitions tell.

    Caffe matches legacy dims against the trailing axes of the layer's blob (1x1x4096x25088
    is fc6's 4096x25088); when the stored net lets us infer those shapes, we do the same, so
    the arrays carry the shapes Caffe would load them into. Others keep the 4-d dims.
    """
    if not weights.legacy:
        return
    from .shapes import param_shapes

    try:
        targets = param_shapes(weights.net)
    except FcnkitError:  # definitions incomplete (e.g. a data layer of unknown size)
        return
    for name, i in sorted(weights.legacy):
        shapes = targets.get(name, ())
        if i < len(shapes) and legacy_fits(weights[name][i].shape, shapes[i]):
            weights[name][i] = weights[name][i].reshape(shapes[i])
            weights.legacy.discard((name, i))


def legacy_fits(stored: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Caffe's rule: legacy num/channels/height/width equal the shape's last four axes."""
    return len(shape) <= 4 and tuple(stored) == (1,) * (4 - len(shape)) + tuple(shape)


def _close(buf: mmap.mmap) -> None:
    try:
        buf.close()
    except BufferError:  # a view is still referenced (an error traceback); GC will unmap
        pass


def _is_text(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def _explain(buf, size: int, error: WireError) -> str:
    head = bytes(buf[:4096])
    try:
        text = head.decode("utf-8")
        if all(c.isprintable() or c in "\t\r\n" for c in text):
            return "this is a text file (a prototxt?), not a binary caffemodel"
    except UnicodeDecodeError:
        pass
    if "past the end" in str(error) or "truncated" in str(error):
        return f"truncated or corrupt caffemodel ({size} bytes): {error}"
    return f"not a valid caffemodel: {error}"


def _decode_net(buf, size: int, fd: int | None = None) -> Weights:
    """Parse a NetParameter; with `fd`, packed float payloads are read straight from the file."""
    header, records = [], []
    for field in wire.iter_fields(buf, 0, size):
        if field.number in _BLOBS_OF and field.wire_type == LEN:
            records.append((field.number,) + _decode_layer(buf, field, field.number, fd))
        else:
            header.append(buf[field.start:field.end])
    net = caffe_pb2.NetParameter.FromString(b"".join(header))
    _check_text(net, "net header")
    weights = Weights(net=net)
    for index, (kind, meta, blobs, legacy) in enumerate(records):
        message = caffe_pb2.LayerParameter if kind == NET_LAYER else caffe_pb2.V1LayerParameter
        layer = message.FromString(meta)
        _check_text(layer, f"layer {index}")
        if kind == NET_LAYER:
            net.layer.append(layer)
            name, type_ = layer.name, layer.type
        else:
            net.layers.append(layer)
            name = layer.name or layer.layer.name
            type_ = V1_TYPE_NAMES.get(layer.type, "") or V0_TYPE_NAMES.get(layer.layer.type, "")
        if blobs:
            weights[name] = blobs
            weights.types[name] = type_
            weights.legacy.update((name, i) for i, flag in enumerate(legacy) if flag)
        else:
            weights.blobless.add(name)
    weights.blobless -= set(weights)  # a name defined twice, once with blobs, is not blobless
    return weights


def _check_text(message, where: str) -> None:
    """FcnkitError unless every string field of `message` (nested ones too) is UTF-8 text.

    Caffe's proto2 strings are not checked by protobuf when parsed: the bad bytes surface
    later as bytes objects or a UnicodeDecodeError, far from the file. Checked here instead.
    """
    for field, value in message.ListFields():
        try:
            values = list(value) if is_repeated(field) else [value]
        except UnicodeDecodeError:
            values = [b""]
        if field.type == field.TYPE_STRING and any(not isinstance(v, str) for v in values):
            raise DecodeError(f"{where}: {field.name} is not UTF-8 text")
        if field.type == field.TYPE_MESSAGE:
            for v in values:
                _check_text(v, f"{where} {field.name}")


def _decode_layer(buf, field: wire.Field, kind: int, fd: int | None) -> tuple[bytes, list, list]:
    """Split one layer message into (definition bytes without blobs, arrays, legacy flags)."""
    blobs_field = _BLOBS_OF.get(kind, _V0_BLOBS)
    name_field = _NAME_OF.get(kind, _V0_NAME)
    fields = list(wire.iter_fields(buf, field.value_start, field.end))
    name = next((bytes(buf[f.value_start:f.end]).decode("utf-8", "replace") for f in fields
                 if f.number == name_field and f.wire_type == LEN), "?")
    meta, blobs, legacy = [], [], []
    for f in fields:
        if f.number == blobs_field and f.wire_type == LEN:
            try:
                array, is_legacy = _decode_blob(buf, f.value_start, f.end, fd)
            except WireError as e:
                raise WireError(e.pos, f"layer {name!r} blob {len(blobs)}: {e.detail}") from None
            blobs.append(array)
            legacy.append(is_legacy)
        elif kind == NET_LAYERS and f.number == _V0_LAYER and f.wire_type == LEN:
            v0_meta, v0_blobs, v0_legacy = _decode_layer(buf, f, _V0_LAYER, fd)
            meta.append(wire.encode_len_field(_V0_LAYER, v0_meta))
            blobs += v0_blobs
            legacy += v0_legacy
        else:
            meta.append(buf[f.start:f.end])
    return b"".join(meta), blobs, legacy


def _decode_blob(buf, start: int, end: int, fd: int | None) -> tuple[np.ndarray, bool]:
    """One BlobProto -> (float32 array, whether its shape came from legacy 4-d fields).

    Chunks are views of `buf`, or for packed floats with a file at hand (offset, count) to
    read into the result directly: the mapped pages are then never touched, so loading costs
    one copy of the weights in memory instead of two.
    """
    floats, doubles, legacy = [], [], {}
    dims = None
    pos = start
    while pos < end:
        f = wire.read_field(buf, pos, end)
        pos = f.end
        n, wt = f.number, f.wire_type
        if (n, wt) in ((_DATA, I32), (_DOUBLE_DATA, I64)):  # unpacked: a run of records
            dtype = "<f4" if n == _DATA else "<f8"
            key = bytes(buf[f.start:f.value_start])
            run, pos = wire.unpacked_run(buf, f.start, end, key, dtype)
            (floats if n == _DATA else doubles).append(run)
        elif n in (_DATA, _DOUBLE_DATA) and wt == LEN:
            dtype = "<f4" if n == _DATA else "<f8"
            view = wire.packed_array(buf, f.value_start, f.end, dtype)
            if n == _DATA and fd is not None and _DIRECT_READ:
                floats.append((f.value_start, view.size))
            else:
                (floats if n == _DATA else doubles).append(view)
        elif n == _SHAPE and wt == LEN:
            dims = _decode_shape(buf, f.value_start, f.end)
        elif n in _LEGACY_DIMS and wt == VARINT:
            legacy[n] = wire.as_int64(f.value)
        # diff / double_diff and unknown fields carry no weights
    chunks = doubles or floats  # Caffe reads double_data when present
    count = sum(c[1] if isinstance(c, tuple) else c.size for c in chunks)
    if legacy:  # Caffe gives the legacy fields precedence over `shape`
        dims = [legacy.get(i, 0) for i in _LEGACY_DIMS]
    elif dims is None:  # no shape stored at all: a flat vector
        dims = [count] if count != 1 else []
    if any(d < 0 for d in dims):
        raise WireError(start, f"negative blob dimension in {tuple(dims)}")
    if len(dims) > MAX_BLOB_AXES:
        raise WireError(start, f"{len(dims)} blob axes, Caffe allows {MAX_BLOB_AXES}")
    if math.prod(dims) != count:  # Python ints: a product past int64 is just unequal
        raise WireError(start, f"shape {tuple(dims)} needs {math.prod(dims)} values but "
                               f"{count} are stored")
    data = np.empty(count, dtype=np.float32)
    offset = 0
    for chunk in chunks:
        if isinstance(chunk, tuple):
            _pread_into(fd, data[offset:offset + chunk[1]], chunk[0])
            offset += chunk[1]
        else:
            data[offset:offset + chunk.size] = chunk
            offset += chunk.size
    return data.reshape(dims), bool(legacy)


def _pread_into(fd: int, out: np.ndarray, position: int) -> None:
    """Fill `out` with the file's bytes at `position` (short reads continued)."""
    view = memoryview(out).cast("B")
    while view:
        got = os.preadv(fd, [view], position)
        if got == 0:
            raise WireError(position, "file ends inside a blob")
        view, position = view[got:], position + got


def _decode_shape(buf, start: int, end: int) -> list[int]:
    dims: list[int] = []
    for f in wire.iter_fields(buf, start, end):
        if f.number == 1 and f.wire_type == LEN:
            dims += wire.read_packed_varints(buf, f.value_start, f.end, MAX_BLOB_AXES)
        elif f.number == 1 and f.wire_type == VARINT:
            dims.append(wire.as_int64(f.value))
        if len(dims) > MAX_BLOB_AXES:
            raise WireError(start, f"more than {MAX_BLOB_AXES} blob axes (Caffe's limit)")
    if any(d < 0 for d in dims):
        raise WireError(start, f"negative blob dimension in {tuple(dims)}")
    return dims


def _load_hdf5(path: Path) -> Weights:
    """Caffe's HDF5 weights, read through surgery.hdf5's checks (links, sizes, errors)."""
    import h5py

    weights = Weights()
    h5 = hdf5.open_hdf5(path)
    with h5, hdf5.hdf5_errors(path):
        link = h5.get("data", getlink=True)
        data = h5.get("data") if isinstance(link, h5py.HardLink) else None
        if not isinstance(data, h5py.Group):
            raise FcnkitError(f"{path}: HDF5 file has no /data group, so it is not a Caffe "
                              "HDF5 caffemodel")
        _read_h5_group(path, data, "", weights, set())
    return weights


def _read_h5_group(path: Path, group, prefix: str, weights: Weights, seen: set) -> None:
    """Datasets 0..n-1 in /data/<layer> are that layer's blobs; a '/' in a layer name nests."""
    import h5py

    members = list(hdf5.hard_members(path, group, f"/data/{prefix}".rstrip("/"), seen))
    datasets = {k: v for k, v in members if isinstance(v, h5py.Dataset)}
    name = prefix.rstrip("/")
    if datasets:
        if sorted(datasets) != sorted(str(i) for i in range(len(datasets))):
            raise FcnkitError(f"{path}: /data/{name} holds datasets {sorted(datasets)}, "
                              f"expected 0..{len(datasets) - 1}")
        weights[name] = [hdf5.read_dataset(path, datasets[str(i)], f"/data/{name}/{i}")
                         .astype(np.float32, copy=False) for i in range(len(datasets))]
    groups = [(key, value) for key, value in members if isinstance(value, h5py.Group)]
    if name and not datasets and not groups:
        weights.blobless.add(name)
    for key, value in groups:
        _read_h5_group(path, value, f"{prefix}{key}/", weights, seen)


def load_weights_for(path: str | os.PathLike, net: caffe_pb2.NetParameter, *,
                     input_channels: int | dict[str, int] = 3) -> Weights:
    """Load weights as Caffe's Net::CopyTrainedLayersFrom would for `net`.

    Layers are matched by name; source layers the net lacks are skipped. A blob must have
    the target's shape exactly, except that blobs stored with legacy 4-d dims match the
    trailing axes (1x1x4096x25088 fits 4096x25088). Anything else is a FcnkitError naming
    the layer, as the shape mismatch is fatal in Caffe.
    """
    from .shapes import param_shapes

    path = Path(path)
    source = load_weights(path)
    targets = param_shapes(net, input_channels=input_channels)
    out = Weights(net=upgrade_net(net))
    for name, shapes in targets.items():
        if name not in source:
            continue
        blobs = source[name]
        if len(blobs) != len(shapes):
            raise FcnkitError(f"{path}: layer {name!r} has {len(blobs)} blobs, the net expects "
                              f"{len(shapes)}")
        arrays = []
        for i, (array, shape) in enumerate(zip(blobs, shapes)):
            fits = array.shape == shape
            if (name, i) in source.legacy:
                fits = legacy_fits(array.shape, shape)
            if not fits:
                raise FcnkitError(f"{path}: cannot copy layer {name!r} param {i}: shape "
                                  f"{_fmt(array.shape)} in the file, {_fmt(shape)} in the net "
                                  "(rename the layer to learn it from scratch)")
            arrays.append(array.reshape(shape))
        out[name] = arrays
        out.types[name] = source.types.get(name) or _layer_type(net, name)
    return out


def _layer_type(net: caffe_pb2.NetParameter, name: str) -> str:
    return next((layer.type for layer in upgrade_net(net).layer if layer.name == name), "")


def _fmt(shape: Iterable[int]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


# ---------------------------------------------------------------------------------- writing

def save_weights(path: str | os.PathLike, weights: Weights, *,
                 net: caffe_pb2.NetParameter | None = None, format: str = "binary",
                 legacy: bool = False) -> None:
    """Write `weights` atomically as a binary caffemodel or a Caffe HDF5 file.

    The layer definitions written come from `net`, else from `weights.net`, else bare
    name + type records; every weights layer must have a layer in that net. legacy=True
    writes the V1 format (type enums, blobs with 4-d num/channels/height/width dims) like
    the published VGG16 and CaffeNet files. Blobs still in `weights.legacy` (their real
    shape unknown) keep legacy dims in the current format too, which Caffe reads the same.
    """
    if format not in FORMATS:
        raise FcnkitError(f"unknown weights format {format!r} (choose {' or '.join(FORMATS)})")
    if legacy and format != "binary":
        raise FcnkitError("legacy V1 format exists only for binary caffemodels")
    definitions = net if net is not None else weights.net
    if format == "hdf5":
        _save_hdf5(Path(path), weights, definitions)
        return
    header, layers = _layer_records(weights, definitions, legacy)
    with atomic_write(path, "wb") as f:
        _encode_net(f, header, layers, legacy, weights.legacy)


def check_layers_in(weights: Weights, net: caffe_pb2.NetParameter, where: str = "") -> None:
    """FcnkitError unless every weights layer has a definition in `net` to be written with.

    where: how to name the net in the message (its file); default: its name.
    """
    names = {layer.name for layer in net.layer} | {layer.name for layer in net.layers}
    missing = [name for name in weights if name not in names]
    if missing:
        where = where or (f"net {net.name!r}" if net.name else "the net definition")
        raise FcnkitError(f"{where}: no layer named {', '.join(map(repr, missing))} for the "
                          "weights to go in (a net definition must have every weights layer)")


def _layer_records(weights: Weights, net: caffe_pb2.NetParameter | None, legacy: bool):
    """(header NetParameter, [(layer message without blobs, arrays)]) in writing order."""
    if net is None:
        header = caffe_pb2.NetParameter()
        if legacy:
            records = []
            for name, arrays in weights.items():
                type_ = weights.types.get(name, "")
                if not type_:
                    raise FcnkitError(f"layer {name!r}: its type is unknown and the legacy V1 "
                                      "format needs it (give the net definition)")
                records.append((caffe_pb2.V1LayerParameter(
                    name=name, type=v1_type_enum(type_, f"layer {name!r}: ")), arrays))
            return header, records
        return header, [(caffe_pb2.LayerParameter(name=name, type=weights.types.get(name, "")),
                         arrays) for name, arrays in weights.items()]
    net = downgrade_net(net) if legacy else upgrade_net(net)
    header = caffe_pb2.NetParameter()
    header.CopyFrom(net)
    header.ClearField("layer")
    header.ClearField("layers")
    layers = net.layers if legacy else net.layer
    check_layers_in(weights, net)
    records = []
    for layer in layers:
        layer.ClearField("blobs")
        records.append((layer, weights.get(layer.name, [])))
    return header, records


def _encode_net(f: BinaryIO, header: caffe_pb2.NetParameter, records, legacy: bool,
                legacy_blobs: set[tuple[str, int]]) -> None:
    kind = NET_LAYERS if legacy else NET_LAYER
    low, high = wire.split_fields(header.SerializeToString(), kind)
    f.write(low)
    for layer, arrays in records:
        blobs = [_blob_parts(a, legacy or ((layer.name, i) in legacy_blobs and np.ndim(a) <= 4),
                             layer.name, i) for i, a in enumerate(arrays)]
        blob_field = _BLOBS_OF[kind]
        meta_low, meta_high = wire.split_fields(layer.SerializeToString(), blob_field)
        blob_keys = [wire.encode_len_prefix(blob_field, len(p) + 4 * d.size + len(s))
                     for p, d, s in blobs]
        size = (len(meta_low) + len(meta_high)
                + sum(len(k) + len(p) + 4 * d.size + len(s) for k, (p, d, s) in zip(blob_keys, blobs)))
        f.write(wire.encode_len_prefix(kind, size))
        f.write(meta_low)
        for key, (prefix, data, suffix) in zip(blob_keys, blobs):
            f.write(key)
            f.write(prefix)
            _write_floats(f, data)
            f.write(suffix)
        f.write(meta_high)
    f.write(high)


def _blob_parts(array: np.ndarray, legacy: bool, layer: str, index: int):
    """A BlobProto as (bytes before the floats, flat float array, bytes after)."""
    array = np.asarray(array)
    data = array.reshape(-1)
    prefix = b""
    suffix = b""
    if legacy:
        if array.ndim > 4:
            raise FcnkitError(f"layer {layer!r} blob {index}: {array.ndim}-d shape "
                              f"{_fmt(array.shape)} cannot be written with legacy 4-d dims")
        dims = (1,) * (4 - array.ndim) + array.shape
        prefix = b"".join(wire.encode_varint_field(n, d) for n, d in zip(_LEGACY_DIMS, dims))
    else:
        suffix = wire.encode_len_field(_SHAPE, wire.encode_packed_varints(1, array.shape))
    if data.size:
        prefix += wire.encode_len_prefix(_DATA, 4 * data.size)
    return prefix, data, suffix


def _write_floats(f: BinaryIO, data: np.ndarray) -> None:
    """Write a flat array as little-endian float32, without a full copy when it is one."""
    if data.dtype == np.dtype("<f4") and data.flags.c_contiguous:
        f.write(data.view(np.uint8))
        return
    for i in range(0, data.size, _WRITE_CHUNK):
        f.write(data[i:i + _WRITE_CHUNK].astype("<f4").tobytes())


def _save_hdf5(path: Path, weights: Weights, net: caffe_pb2.NetParameter | None) -> None:
    """Caffe's HDF5 layout: /data/<layer>/<i>; with a net, a group for each of its layers."""
    import h5py

    names = list(weights)
    if net is not None:
        check_layers_in(weights, net)
        names = list(dict.fromkeys(layer.name for layer in upgrade_net(net).layer))
    with atomic_write(path, "w+b") as f:
        with h5py.File(f, "w", track_order=True) as h5:
            data = h5.create_group("data", track_order=True)
            for name in names:
                group = data.require_group(name)
                for i, array in enumerate(weights.get(name, [])):
                    group.create_dataset(str(i), data=np.asarray(array, dtype=np.float32))
