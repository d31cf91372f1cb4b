"""Progress bars that stay readable in a log file.

On a terminal tqdm redraws a line ten times a second; written to a file (solve.py > log 2>&1)
every redraw stays, megabytes a day on a long run. Away from a terminal, bars redraw at most
every LOG_INTERVAL seconds.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL = 30.0


def bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs), redrawing at most every LOG_INTERVAL s when stderr is no tty."""
    stream = kwargs.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        kwargs.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(iterable, **kwargs)
