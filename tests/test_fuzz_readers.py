"""Bounded mutation fuzzing of every reader in CI (tests/fuzz_readers.py, which also runs the
longer hand runs): valid seeds written by fcnkit's writers are mutated; only FcnkitError may
escape, each input within 5 s, the whole run under 1 GiB resident memory with its address
space capped at 1 GiB beyond the imports (so a reader that balloons fails with MemoryError,
an escape). One subprocess for all readers keeps the cost to one interpreter start.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from test_hostile_inputs import ROOT, run_measured

from fuzz_readers import TARGETS

COUNT = 40  # inputs per reader: ~10 s for all seven on one core


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "report.json"
    command = (f"import sys, runpy; sys.argv = ['fuzz_readers.py', '--count', '{COUNT}', "
               f"'--json', '--seed', '9']; sys.stdout = open({str(out)!r}, 'w'); "
               f"runpy.run_path({str(Path(__file__).parent / 'fuzz_readers.py')!r}, "
               "run_name='__main__')")
    rc, stderr, seconds, peak = run_measured([sys.executable, "-c", command], ROOT, timeout=300)
    assert out.exists() and out.stat().st_size, stderr[-2000:]
    return json.loads(out.read_text()), peak, seconds


@pytest.mark.parametrize("reader", sorted(TARGETS))
def test_only_fcnkit_errors_escape(fuzz_run, reader):
    report, peak, _ = fuzz_run
    r = report["readers"][reader]
    assert r["tried"] == COUNT
    assert r["escapes"] == []
    assert r["accepted"] + r["errors"] == COUNT
    assert r["slowest_s"] < 5.0
    assert peak < 1 << 30, f"peak resident memory {peak / 2**20:.0f} MiB"
