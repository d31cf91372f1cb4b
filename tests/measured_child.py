"""Run a command and write its CPU seconds and peak resident bytes to a JSON file.

Why a separate process: on Linux a process's ru_maxrss keeps the resident size of the process
that exec'd it (execve records the old address space's high-water mark), so a command started
straight from a pytest worker that has grown to 1 GiB reports at least 1 GiB whatever it uses.
This small launcher is exec'd first; the command is then forked from it (a fresh signal struct,
a small address space) and reaped with wait4, whose rusage is that command's alone.

    python measured_child.py OUT.json COMMAND [ARGS...]    (exit status: the command's)
"""
from __future__ import annotations

import json
import os
import sys


def main() -> int:
    out, command = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    with open(out, "w") as f:
        json.dump({"cpu_s": usage.ru_utime + usage.ru_stime,
                   "peak_bytes": usage.ru_maxrss * 1024}, f)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
