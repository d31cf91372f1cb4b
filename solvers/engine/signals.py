"""SIGINT / SIGHUP during training, with the effects of Caffe's -sigint_effect / -sighup_effect.

A signal only records a request; the solver acts on it between iterations (and between test
batches), so weights are never snapshotted half-updated. Effects: "stop" (finish the
iteration, then stop; Solve's snapshot_after_train then writes a snapshot), "snapshot"
(snapshot and go on), "none". Caffe's defaults: SIGINT stops, SIGHUP snapshots. A second
SIGINT once a stop was requested (e.g. while the final snapshot is written) raises
KeyboardInterrupt for a hard abort (snapshots are written atomically: the previous stays whole).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

NONE, SNAPSHOT, STOP = 0, 1, 2   # ordered: the strongest request wins when merged
EFFECTS = {"none": NONE, "snapshot": SNAPSHOT, "stop": STOP}


class Requests:
    """Pending actions from signals or from code (`request("stop")`), read once each."""

    def __init__(self) -> None:
        self._pending = NONE

    def request(self, effect: str) -> None:
        if effect not in EFFECTS:
            raise ValueError(f"unknown solver action {effect!r} (choose {', '.join(EFFECTS)})")
        self._pending = max(self._pending, EFFECTS[effect])

    def take(self) -> int:
        """The pending action (NONE, SNAPSHOT or STOP), cleared as Caffe's GotSIGINT does."""
        action, self._pending = self._pending, NONE
        return action

    @contextlib.contextmanager
    def handling_signals(self, sigint_effect: str = "stop",
                         sighup_effect: str = "snapshot") -> Iterator[None]:
        """Route SIGINT/SIGHUP to requests for the duration (main thread only; elsewhere a
        no-op, as Python delivers signals to the main thread)."""
        for name, effect in (("sigint_effect", sigint_effect), ("sighup_effect", sighup_effect)):
            if effect not in EFFECTS:
                raise ValueError(f"{name} must be one of {', '.join(EFFECTS)}, got {effect!r}")
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stop_pending = False

        def on_sigint(signum, frame):
            nonlocal stop_pending
            if stop_pending:
                raise KeyboardInterrupt
            if EFFECTS[sigint_effect] == STOP:
                stop_pending = True
            self.request(sigint_effect)

        def on_sighup(signum, frame):
            self.request(sighup_effect)

        previous = {signal.SIGINT: signal.signal(signal.SIGINT, on_sigint)}
        if hasattr(signal, "SIGHUP"):
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_sighup)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
