"""Reading HDF5 files (weights, solverstates) without trusting them.

libhdf5 believes the sizes a file states: a 3 KB file can declare a 30000x30000 dataset with no
stored chunks and a fill value (reading it makes 3.4 GiB), a 51-byte one a driver-info block
whose size makes libhdf5 itself allocate 0.7 GB, and a corrupt heap surfaces as whatever
h5py raises (RuntimeError, OSError, KeyError, ValueError). So here:

- the superblock is checked before libhdf5 opens the file (end-of-file address and the
  driver-info block within the file);
- every h5py/libhdf5 exception becomes FcnkitError naming the file (`hdf5_errors`);
- only hard links are followed, each object once: soft and external links and link cycles
  are errors, never followed (`hard_members`);
- a dataset is read only if the file really holds its bytes: contiguous data must lie
  inside the file, chunked data may expand at most `MAX_EXPANSION` times (DEFLATE's limit
  is 1032:1), fill-value-only, external and virtual datasets are refused (`read_dataset`).

Memory is so bounded by about `MAX_EXPANSION` times the file's size, and in practice (Caffe
writes uncompressed contiguous datasets) by the file's size.
"""
from __future__ import annotations

import contextlib
import math
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from netgen.errors import FcnkitError

SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_EXPANSION = 1100  # stored bytes -> data bytes for compressed chunks (DEFLATE: <= 1032)
UNDEFINED = (1 << 64) - 1  # HDF5's undefined address with 8-byte offsets
# h5py's and libhdf5's ways of saying a file is corrupt; KeyError/TypeError come from h5py's
# object lookups meeting a damaged header.
H5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError, MemoryError,
             OverflowError, SystemError)


def check_superblock(path: Path) -> None:
    """FcnkitError unless the superblock at byte 0 states addresses inside the file.

    Versions 0/1 (what h5py and Caffe write by default) and 2/3 are read; the end-of-file
    address must not exceed the file, and a driver-info block (v0/v1) must lie inside it.
    Layout: HDF5 File Format Specification, section II.A.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(128)
    if not head.startswith(SIGNATURE):
        raise FcnkitError(f"{path}: not an HDF5 file (no HDF5 signature at byte 0)")
    if len(head) < 16:
        raise FcnkitError(f"{path}: truncated HDF5 file ({size} bytes)")
    version = head[8]
    if version in (0, 1):
        offsets, lengths = head[13], head[14]
        at = 24 + (4 if version == 1 else 0)  # base, free-space, EOF, driver-info addresses
    elif version in (2, 3):
        offsets, lengths = head[9], head[10]
        at = 12  # base, superblock-extension, EOF, root object header addresses
    else:
        raise FcnkitError(f"{path}: unknown HDF5 superblock version {version}")
    if offsets != 8 or lengths != 8:
        raise FcnkitError(f"{path}: corrupt HDF5 superblock ({offsets}-byte addresses, "
                          f"{lengths}-byte lengths; files use 8)")
    if len(head) < at + 32:
        raise FcnkitError(f"{path}: truncated HDF5 file ({size} bytes)")
    base, _, eof, fourth = struct.unpack_from("<4Q", head, at)
    if base > size or eof == UNDEFINED or base + eof > size or eof < at + 32:
        raise FcnkitError(f"{path}: truncated or corrupt HDF5 file: its superblock says "
                          f"{eof} bytes, the file has {size}")
    if version in (0, 1) and fourth != UNDEFINED:  # driver-info block: 16-byte header + info
        info = size
        if base + fourth + 16 <= size:
            with open(path, "rb") as f:
                f.seek(base + fourth)
                info = struct.unpack_from("<I", f.read(16), 4)[0]
        if base + fourth + 16 + info > size:
            raise FcnkitError(f"{path}: corrupt HDF5 superblock (driver-info block past the "
                              "end of the file)")


@contextlib.contextmanager
def hdf5_errors(path: Path) -> Iterator[None]:
    """Turn any h5py/libhdf5 exception inside the block into FcnkitError naming `path`."""
    try:
        yield
    except FcnkitError:
        raise
    except H5_ERRORS as e:
        raise FcnkitError(f"{path}: corrupt HDF5 file ({type(e).__name__}: "
                          f"{str(e) or 'no detail'})") from None


def open_hdf5(path: Path):
    """h5py.File for reading after `check_superblock`; FcnkitError when it cannot be opened."""
    import h5py

    if not path.is_file():
        raise FcnkitError(f"{path}: no such file")
    check_superblock(path)
    with hdf5_errors(path):
        return h5py.File(path, "r")


def hard_members(path: Path, group, where: str, seen: set) -> Iterator[tuple[str, object]]:
    """(name, object) for each member of `group` reached by a hard link, in file order.

    Soft and external links are refused (FcnkitError), never followed; `seen` holds the
    objects visited so far (by address), so a hard-link cycle is refused too.
    """
    import h5py

    for name in group:
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            kind = "an external" if isinstance(link, h5py.ExternalLink) else "a soft"
            raise FcnkitError(f"{path}: {where}/{name} is {kind} link; links are not followed")
        key = _address(group, name)
        if key in seen:
            raise FcnkitError(f"{path}: {where}/{name} links back to an object already read "
                              "(a link cycle or a shared object)")
        seen.add(key)
        yield name, group[name]


def _address(group, name: str) -> int:
    """The object a hard link points at, from the link itself (H5Lget_info). H5Oget_info,
    which reads the object header, loops for ever on some corrupt headers."""
    return group.id.links.get_info(name.encode("utf-8", "surrogateescape")).u


def read_dataset(path: Path, dataset, where: str, kinds: str = "fiu") -> np.ndarray:
    """The dataset's values, after checking the file really holds them.

    kinds: accepted numpy dtype kinds ('f' float, 'i'/'u' integers, 'S' bytes strings).
    FcnkitError for other dtypes, external/virtual storage, data held only as a fill value,
    and stored sizes that cannot hold the declared shape.
    """
    import h5py

    with hdf5_errors(path):
        dtype = dataset.dtype
        shape = dataset.shape
        if dtype.kind not in kinds or dtype.itemsize == 0:
            raise FcnkitError(f"{path}: {where} holds {dtype} data, expected "
                              f"{_kind_names(kinds)}")
        if shape is None:  # HDF5 null dataspace
            raise FcnkitError(f"{path}: {where} holds no dataspace")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes == 0:
            return np.empty(shape, dtype=dtype)
        if dataset.external or dataset.is_virtual:
            raise FcnkitError(f"{path}: {where} keeps its data outside the file; not read")
        stored = dataset.id.get_storage_size()
        file_size = path.stat().st_size
        if stored == 0:
            raise FcnkitError(f"{path}: {where} declares shape {shape} but stores no data "
                              "(only a fill value)")
        if stored > file_size or (dataset.chunks is None and stored != nbytes):
            raise FcnkitError(f"{path}: {where} declares {nbytes} bytes of data, the file "
                              f"stores {stored} of its {file_size}")
        if dataset.chunks is None:
            compact = dataset.id.get_create_plist().get_layout() == h5py.h5d.COMPACT
            offset = 0 if compact else dataset.id.get_offset()  # compact: inside its header
            if offset is None or offset + nbytes > file_size:
                raise FcnkitError(f"{path}: {where} data runs past the end of the file")
        elif nbytes > MAX_EXPANSION * stored:
            raise FcnkitError(f"{path}: {where} declares {nbytes} bytes stored in {stored}; "
                              f"more than {MAX_EXPANSION}x compression is refused")
        return dataset[()]


def _kind_names(kinds: str) -> str:
    names = {"f": "floats", "i": "integers", "u": "integers", "S": "text"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))

