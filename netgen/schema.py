"""Reading and writing Caffe messages (prototxt text and binary protobuf) with clear errors.

Every failure a user can cause (missing file, malformed text, unknown field, corrupt or
truncated binary, text given where binary is expected, missing required field) becomes an
FcnkitError naming the file, and for text the line and column: "net.prototxt:12:5: ...".
Binary parsing keeps fields this schema does not know (e.g. from Caffe forks), so they
survive a read/write round trip unchanged.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from .errors import FcnkitError
from .fileio import write_bytes_atomic, write_text_atomic
from .proto import caffe_pb2

M = TypeVar("M", bound=Message)

_PACKAGE_PREFIX = caffe_pb2.DESCRIPTOR.package + "."
# text_format prefixes some messages with the offending line in quotes: "'<line>': ".
_QUOTED_LINE = re.compile(r"^'.*?': ")


def _type_name(message_type: type[Message]) -> str:
    return message_type.DESCRIPTOR.full_name.removeprefix(_PACKAGE_PREFIX)


def _clean(what: str) -> str:
    """Drop our package prefix from type names so messages read like Caffe's."""
    return what.replace(_PACKAGE_PREFIX, "")


def _check_required(message: Message, source: str) -> None:
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise FcnkitError(f"{source}: missing required field(s): {missing}")


def parse_prototxt(text: str, message_type: type[M], source: str = "<text>") -> M:
    """Parse protobuf text format (a .prototxt) into a new `message_type`.

    Strict like Caffe's reader: unknown fields, bad values and repeated singular fields
    are errors, reported as "source:line:col: what".
    """
    message = message_type()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        what = str(e)
        where = f"{line}:{col} : " if col else f"{line} : "
        if line is not None:
            what = what.removeprefix(where)
        what = _clean(_QUOTED_LINE.sub("", what, count=1))
        loc = ":".join(str(v) for v in (source, line, col) if v is not None)
        raise FcnkitError(f"{loc}: {what}") from None
    _check_required(message, source)
    return message


_LAYER_IN_MESSAGE = re.compile(r"\blayer '?([^\s'()]+)'? \(")


def locate_layer_error(path: str | os.PathLike, error: FcnkitError) -> FcnkitError:
    """`error` prefixed with "path:line" of the layer it names ("layer conv1 (Convolution):
    ..."), found as the file's `name: "conv1"`; just "path" when no single line matches. The
    error keeps its class (FcnkitTypeError stays a TypeError for ported pycaffe scripts)."""
    message = str(error)
    found = _LAYER_IN_MESSAGE.search(message)
    line = None
    if found:
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            text = ""
        pattern = re.compile(r'\bname\s*:\s*"' + re.escape(found[1]) + '"')
        lines = [i for i, row in enumerate(text.splitlines(), 1) if pattern.search(row)]
        line = lines[0] if len(lines) == 1 else None
    return type(error)(f"{path}:{line}: {message}" if line else f"{path}: {message}")


def _read(path: str | os.PathLike, mode: str) -> str | bytes:
    path = Path(path)
    try:
        if mode == "text":
            return path.read_text(encoding="utf-8")
        return path.read_bytes()
    except FileNotFoundError:
        raise FcnkitError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FcnkitError(f"{path}: is a folder, expected a file") from None
    except PermissionError:
        raise FcnkitError(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise FcnkitError(
            f"{path}: not UTF-8 text (byte {e.start}); is it a binary file?"
        ) from None


def read_prototxt(path: str | os.PathLike, message_type: type[M]) -> M:
    """Read a text-format file into `message_type`."""
    return parse_prototxt(_read(path, "text"), message_type, source=str(path))


def to_prototxt(message: Message) -> str:
    """Text format as Caffe and pycaffe write it (fields in number order, 2-space indent)."""
    return text_format.MessageToString(message)


def write_prototxt(path: str | os.PathLike, message: Message) -> None:
    """Write `message` as text, atomically."""
    write_text_atomic(path, to_prototxt(message))


def read_net(path: str | os.PathLike) -> caffe_pb2.NetParameter:
    """Read a net definition (.prototxt); a solver prototxt given instead is named as such."""
    text = _read(path, "text")
    try:
        return parse_prototxt(text, caffe_pb2.NetParameter, source=str(path))
    except FcnkitError:
        if not _parses(text, caffe_pb2.SolverParameter):
            raise
        raise FcnkitError(f"{path}: this is a solver definition, not a net; give the net it "
                          "names (net / train_net / test_net)") from None


def _parses(text: str, message_type: type[Message]) -> bool:
    try:
        text_format.Parse(text, message_type())
    except text_format.ParseError:
        return False
    return True


def read_solver(path: str | os.PathLike) -> caffe_pb2.SolverParameter:
    """Read a solver definition (solver.prototxt)."""
    return read_prototxt(path, caffe_pb2.SolverParameter)


_TEXT_START = re.compile(rb"\A\s*(#|[A-Za-z_][A-Za-z0-9_]*\s*[:{<])")


def _looks_like_text(data: bytes) -> bool:
    """True for data that starts like a prototxt (a comment or `field:` / `field {`)."""
    head = data[:4096]
    if not _TEXT_START.match(head):
        return False
    try:
        head.decode("ascii")
    except UnicodeDecodeError:
        return False
    return True


def parse_binary(data: bytes, message_type: type[M], source: str = "<bytes>") -> M:
    """Parse binary protobuf (.caffemodel, .binaryproto, .solverstate) into `message_type`.

    Unknown fields are kept. Corrupt or truncated data, text given instead of binary,
    and missing required fields raise FcnkitError naming `source`.
    """
    name = _type_name(message_type)
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as e:
        if _looks_like_text(data):
            raise FcnkitError(
                f"{source}: looks like a text prototxt, not a binary {name}"
            ) from None
        raise FcnkitError(
            f"{source}: not a valid binary {name} (corrupt or truncated): {_clean(str(e))}"
        ) from None
    # Text that happens to decode leaves only unknown fields behind.
    if data and not message.ListFields() and _looks_like_text(data):
        raise FcnkitError(f"{source}: looks like a text prototxt, not a binary {name}")
    _check_required(message, source)
    return message


def read_binary(path: str | os.PathLike, message_type: type[M]) -> M:
    """Read a binary protobuf file into `message_type`."""
    return parse_binary(_read(path, "binary"), message_type, source=str(path))


def write_binary(path: str | os.PathLike, message: Message) -> None:
    """Write `message` in binary wire format, atomically."""
    _check_required(message, str(path))
    write_bytes_atomic(path, message.SerializeToString())
