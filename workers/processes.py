"""``rapid sender --processes N``: N sender processes under one supervisor (issue #21).

One sender process is bound by its interpreter lock (its provider I/O thread runs every
Twilio call of the process; see docs/benchmarks.md), so a machine with N cores runs N of
them. They share the fleet-wide rate limits, kill switch and lanes through Redis exactly as
N instances would; the supervisor only starts them, restarts one that dies, and passes
SIGTERM on. Each child is an ordinary ``rapid sender`` (``--processes 1``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

#: A stopping child drains within 25 s (SENDER_DRAIN_MS); the supervisor waits this long
#: before it kills what is left, inside the contract's 30 s (§9.6).
STOP_GRACE_S = 28.0
#: A child that dies within this long of its start, this many times in a row, is a setting
#: or a service that is wrong, not bad luck: the supervisor gives up (exit 1).
EARLY_EXIT_S = 5.0
EARLY_EXITS_MAX = 3
#: Pause before restarting a child that died.
RESTART_DELAY_S = 1.0
#: The supervisor's heartbeat file is touched while every child's own file is this fresh.
CHILD_BEAT_FRESH_S = 15.0

Popen = Callable[..., Any]


class Supervisor:
    """Runs ``count`` children of ``rapid <args>`` until ``stop`` is set."""

    def __init__(
        self,
        args: Sequence[str],
        count: int,
        stop: threading.Event,
        *,
        heartbeat_file: Path | None = None,
        popen: Popen = subprocess.Popen,
    ) -> None:
        self._args = list(args)
        self._count = count
        self._stop = stop
        self._heartbeat_file = heartbeat_file
        self._popen = popen
        self._children: dict[int, tuple[Any, float]] = {}
        self._early_exits = 0

    def _child_beat(self, i: int) -> Path | None:
        if self._heartbeat_file is None:
            return None
        return self._heartbeat_file.with_name(f"{self._heartbeat_file.name}.{i}")

    def _start(self, i: int) -> None:
        args = [sys.executable, "-m", "workers", *self._args]
        beat = self._child_beat(i)
        if beat is not None:
            args += ["--heartbeat-file", str(beat)]
        self._children[i] = (self._popen(args), time.monotonic())
        log.info("sender.child_started", child=i, pid=self._children[i][0].pid)

    def run(self) -> int:
        """Supervise until ``stop``; 0, or 1 when children keep dying at start."""
        for i in range(self._count):
            self._start(i)
        code = 0
        while not self._stop.wait(0.5):
            if not self._restart_dead():
                code = 1
                break
            self._beat()
        self._terminate()
        return code

    def _restart_dead(self) -> bool:
        for i, (child, started) in list(self._children.items()):
            if child.poll() is None:
                continue
            early = time.monotonic() - started < EARLY_EXIT_S
            self._early_exits = self._early_exits + 1 if early else 0
            log.warning("sender.child_exited", child=i, code=child.returncode, early=early)
            if self._early_exits >= EARLY_EXITS_MAX:
                log.error("sender.children_keep_dying", exits=self._early_exits)
                return False
            if self._stop.wait(RESTART_DELAY_S):
                return True
            self._start(i)
        return True

    def _beat(self) -> None:
        if self._heartbeat_file is None:
            return
        now = time.time()
        for i in self._children:
            beat = self._child_beat(i)
            try:
                if beat is None or now - beat.stat().st_mtime > CHILD_BEAT_FRESH_S:
                    return
            except FileNotFoundError:
                return
        self._heartbeat_file.touch()

    def _terminate(self) -> None:
        for child, _ in self._children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for i, (child, _) in self._children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("sender.child_killed", child=i)
                child.kill()
                child.wait()
