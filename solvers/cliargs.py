"""Argument parsing for fcnkit's scripts: a usage mistake is one error line, like any other."""
from __future__ import annotations

import argparse
from typing import NoReturn

from netgen.errors import FcnkitError


class Parser(argparse.ArgumentParser):
    """argparse whose errors raise FcnkitError (reported by cli_entry as one line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise FcnkitError(f"{self.prog}: {message} (see --help)")


def count_list(text: str) -> list[int]:
    """"1000" or "1000,500,500" -> whole numbers >= 0."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or numbers separated by commas, "
                                         f"got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"counts must be >= 0, got {text!r}")
    return values


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive(text: str) -> int:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be >= 1, got 0")
    return value


def use_threads(n: int | None) -> None:
    """--threads: n torch (and OpenCV) CPU threads; None leaves torch's choice (one per
    core). Fewer threads than cores keeps a run steady beside other work on the machine."""
    if n is None:
        return
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)
