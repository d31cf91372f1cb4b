"""Protobuf wire format, just enough to stream big caffemodels.

Going through protobuf for a 500 MB caffemodel costs several copies of the float payload
(a bytes object, the parsed repeated field, then a list or array). Here a packed float field
is located in the file buffer and handed to numpy as a view, and on the way out the payload
is written straight from the array's memory. Everything that is not blob data stays small
and is parsed with protobuf by the caller.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_FIXED_WIDTH = {I64: 8, I32: 4}
MAX_FIELD_NUMBER = (1 << 29) - 1  # protobuf's limit on field numbers
MAX_KEY_BYTES = 5  # a key is a varint32: canonical or padded, at most 5 bytes
_UINT64 = (1 << 64) - 1


class WireError(ValueError):
    """Malformed or truncated protobuf data; `pos` is the byte offset of the problem."""

    def __init__(self, pos: int, message: str):
        super().__init__(f"byte {pos}: {message}")
        self.pos, self.detail = pos, message


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint at buf[pos]; return (value, position after it).

    Any encoding protobuf accepts is read, non-canonical ones (padded with 0x80 bytes, up to
    10 bytes) included; as in protobuf, bits past the 64th are dropped.
    """
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError(start, "truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _UINT64, pos
        shift += 7
        if shift >= 70:
            raise WireError(start, "varint longer than 10 bytes")


def as_int64(value: int) -> int:
    """Reinterpret a decoded varint as a two's-complement int64 (negative dims, -1 defaults)."""
    return value - (1 << 64) if value >= 1 << 63 else value


class Field:
    """One field found in a message: number, wire type, where it lies and its scalar value."""

    __slots__ = ("number", "wire_type", "start", "value_start", "end", "value")

    def __init__(self, number: int, wire_type: int, start: int, value_start: int, end: int,
                 value: int | None):
        self.number, self.wire_type, self.value = number, wire_type, value
        self.start, self.value_start, self.end = start, value_start, end


def read_field(buf, pos: int, end: int) -> Field:
    """Decode the field starting at buf[pos].

    For length-delimited fields value_start..end is the payload; for varints `value` holds the
    number. Groups (wire types 3/4) are not part of Caffe's schema and are rejected, which is
    also how text (a prototxt) handed in as binary gets caught early.
    """
    field_start = pos
    key, pos = read_varint(buf, pos, end)
    if pos - field_start > MAX_KEY_BYTES:  # protobuf reads keys as varint32s
        raise WireError(field_start, f"field key of {pos - field_start} bytes (at most "
                                     f"{MAX_KEY_BYTES})")
    number, wire_type = key >> 3, key & 7
    if number == 0:
        raise WireError(field_start, "field number 0")
    if number > MAX_FIELD_NUMBER:
        raise WireError(field_start, f"field number {number} beyond protobuf's {MAX_FIELD_NUMBER}")
    value = None
    if wire_type == VARINT:
        value, pos = read_varint(buf, pos, end)
        value_start = field_start
    elif wire_type == LEN:
        length, value_start = read_varint(buf, pos, end)
        pos = value_start + length
    elif wire_type in _FIXED_WIDTH:
        value_start = pos
        pos += _FIXED_WIDTH[wire_type]
    else:
        raise WireError(field_start, f"unsupported wire type {wire_type} (field {number})")
    if pos > end:
        raise WireError(field_start, f"field {number} runs past the end of its message "
                                     f"({pos - end} bytes missing)")
    return Field(number, wire_type, field_start, value_start, pos, value)


def iter_fields(buf, start: int, end: int) -> Iterator[Field]:
    """Walk the fields of the message in buf[start:end]."""
    pos = start
    while pos < end:
        field = read_field(buf, pos, end)
        pos = field.end
        yield field


def packed_array(buf, start: int, end: int, dtype: str) -> np.ndarray:
    """A read-only view of a packed fixed-width payload (little-endian float/double)."""
    itemsize = np.dtype(dtype).itemsize
    if (end - start) % itemsize:
        raise WireError(start, f"packed payload of {end - start} bytes is not a multiple of "
                               f"{itemsize}")
    return np.frombuffer(buf, dtype=dtype, count=(end - start) // itemsize, offset=start)


def unpacked_run(buf, start: int, end: int, key: bytes, dtype: str) -> tuple[np.ndarray, int]:
    """Slice a run of unpacked repeated fixed-width values (key, value, key, value ...).

    Old writers emit `data` unpacked: millions of 5-byte records. They are read as one
    strided structured view instead of a Python loop. `key` is the first record's key bytes
    as found in the file (a non-canonical encoding is longer than the usual one); the run
    ends at the first record keyed otherwise. Returns (values view, end of run), the end
    always past the first record.
    """
    width = len(key) + np.dtype(dtype).itemsize
    records = (end - start) // width
    if records == 0 or bytes(buf[start:start + len(key)]) != key:
        raise WireError(start, "truncated fixed-width field")
    keys = np.frombuffer(buf, dtype=np.dtype((np.void, len(key))), count=records, offset=start)
    mismatch = np.flatnonzero(keys != np.void(key))
    count = int(mismatch[0]) if mismatch.size else records
    layout = np.dtype({"names": ["v"], "formats": [dtype], "offsets": [len(key)],
                       "itemsize": width})
    values = np.frombuffer(buf, dtype=layout, count=count, offset=start)["v"]
    return values, start + count * width


def read_packed_varints(buf, start: int, end: int, limit: int | None = None) -> list[int]:
    """The int64 values of a packed varint payload; WireError past `limit` values."""
    out = []
    pos = start
    while pos < end:
        value, pos = read_varint(buf, pos, end)
        out.append(as_int64(value))
        if limit is not None and len(out) > limit:
            raise WireError(start, f"more than {limit} values in a packed field")
    return out


# ------------------------------------------------------------------------------ encoding

def encode_varint(value: int) -> bytes:
    """Varint bytes of an int; negative values as 10-byte two's complement like protobuf."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def encode_key(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def encode_len_prefix(number: int, length: int) -> bytes:
    """Key and length of a length-delimited field whose payload is written separately."""
    return encode_key(number, LEN) + encode_varint(length)


def encode_len_field(number: int, payload: bytes) -> bytes:
    return encode_len_prefix(number, len(payload)) + payload


def encode_varint_field(number: int, value: int) -> bytes:
    return encode_key(number, VARINT) + encode_varint(value)


def encode_packed_varints(number: int, values) -> bytes:
    """A packed repeated varint field; empty lists are omitted, as protobuf does."""
    if not len(values):
        return b""
    return encode_len_field(number, b"".join(encode_varint(int(v)) for v in values))


def split_fields(payload: bytes, before: int) -> tuple[bytes, bytes]:
    """Split a serialized message into its fields numbered below `before` and the rest.

    Protobuf writes fields in number order; inserting our streamed blobs between the two
    halves makes the output byte-identical to what protobuf would write for the whole message.
    Unknown fields (serialized last by protobuf) stay in the second half.
    """
    low, high = [], []
    for field in iter_fields(payload, 0, len(payload)):
        (low if field.number < before else high).append(payload[field.start:field.end])
    return b"".join(low), b"".join(high)
