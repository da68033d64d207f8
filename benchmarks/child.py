"""One benchmark step in a fresh interpreter, so its peak memory is its own.

Standard library only: a child's high-water mark also counts the pages it inherits from its
parent at fork, so a parent that measures memory must stay small.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def run_child(module: str, *args: str) -> tuple[str, float, float]:
    """Run ``python -m module args``; its (stdout, wall seconds, peak RSS in MB).

    ``os.wait4`` reports the rusage of exactly this child (``RUSAGE_CHILDREN`` would mix in
    every other child); ``ru_maxrss`` is in kilobytes on Linux.
    """
    command = [sys.executable, "-m", module, *args]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.stdout.close()
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status):
            errors.seek(0)
            raise SystemExit(f"python -m {module} {' '.join(args[:2])} failed:\n{errors.read()}")
    return stdout, wall, usage.ru_maxrss / 1024
