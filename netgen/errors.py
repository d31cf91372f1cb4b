"""One error type for every mistake a user can make, and the CLI wrapper that reports it.

User errors (bad files, bad options) become a single line on stderr and exit status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from typing import Callable, NoReturn, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class FcnkitError(Exception):
    """A problem with the user's input: message says what and where (file:line, layer, option)."""


@functools.cache
def error_class(base: type[Exception]) -> type[FcnkitError]:
    """FcnkitError that is also `base`, the class pycaffe (or Caffe's Python layer) raises for
    the same mistake: a script ported from pycaffe keeps its `except RuntimeError:` and the
    CLIs still print one line. Falls back to FcnkitError for a class that cannot be mixed in."""
    if issubclass(base, FcnkitError):
        return base
    try:
        return type(f"Fcnkit{base.__name__}", (FcnkitError, base),
                    {"__module__": __name__, "__doc__": f"FcnkitError raised where pycaffe "
                                                       f"raises {base.__name__}."})
    except TypeError:  # e.g. a C layout that does not combine with FcnkitError
        return FcnkitError


def error_like(base: type[Exception], message: str) -> FcnkitError:
    """An error_class(base) carrying `message` (FcnkitError when base needs other arguments)."""
    try:
        return error_class(base)(message)
    except TypeError:  # constructors such as UnicodeDecodeError's take more than a message
        return FcnkitError(message)


# The classes pycaffe's net_spec.py and coord_map.py raise, as FcnkitErrors.
FcnkitAssertionError = error_class(AssertionError)
FcnkitAttributeError = error_class(AttributeError)
FcnkitRuntimeError = error_class(RuntimeError)
FcnkitTypeError = error_class(TypeError)
FcnkitValueError = error_class(ValueError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are user errors too: one line under cli_entry, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise FcnkitError(f"{message} (see {self.prog} --help)")


def size_arg(text: str) -> tuple[int, int]:
    """argparse type for an image size given as HxW (e.g. 500x500): (H, W), both >= 1."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or min(int(m[1]), int(m[2])) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW with positive integers, e.g. 500x500, "
                                         f"not {text!r}")
    return int(m[1]), int(m[2])


def cli_entry(main: F) -> F:
    """Wrap a CLI main(): FcnkitError / OSError / KeyboardInterrupt -> one line, non-zero exit."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            status = main(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at exit
            return status
        except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None  # the shell's status for a SIGPIPE death
        except FcnkitError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as e:
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            print(f"error: {where}{e.strerror or e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
