"""Live progress of a blast: a rich progress bar per channel, or JSON lines for scripts."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from messaging.ports import BlastStore, LiveCounts

#: Seconds of history behind the "current" rate.
RATE_WINDOW_S = 5.0


class _Rate:
    """Current (last few seconds) and average rate of a growing counter."""

    def __init__(self) -> None:
        self._points: deque[tuple[float, int]] = deque()
        self._first: tuple[float, int] | None = None

    def add(self, t: float, value: int) -> tuple[float, float]:
        if self._first is None:
            self._first = (t, value)
        self._points.append((t, value))
        while len(self._points) > 2 and t - self._points[0][0] > RATE_WINDOW_S:
            self._points.popleft()
        t0, v0 = self._points[0]
        current = (value - v0) / (t - t0) if t > t0 else 0.0
        ft, fv = self._first
        average = (value - fv) / (t - ft) if t > ft else 0.0
        return current, average


def snapshot(
    blasts: BlastStore, blast_id: str, live: LiveCounts | None = None
) -> dict[str, Any] | None:
    """The contract summary of one blast (live counts while it runs), or None if none."""
    record = blasts.get(blast_id)
    return blasts.summaries([record], live)[0] if record else None


def is_done(summary: dict[str, Any], *, until_idle: bool) -> bool:
    """Ended; or, with ``until_idle``, nothing left to send now (deferred rows may wait)."""
    if summary["status"] in ("completed", "canceled", "expired"):
        return True
    if until_idle and summary["status"] == "sending":
        return all(c["pending"] == 0 for c in summary["counts"].values())
    return False


def watch(
    blasts: BlastStore,
    blast_id: str,
    *,
    as_json: bool = False,
    interval_s: float = 0.5,
    until_idle: bool = False,
    timeout_s: float | None = None,
    console: Console | None = None,
    emit: Callable[[str], None] = print,
    live: LiveCounts | None = None,
) -> dict[str, Any]:
    """Show progress until the blast ends (or is idle); returns the final summary.

    Each look reads the blast's live counters (``live``), not its ledger rows; the ledger
    has the last word on when a blast is idle.
    """
    deadline = time.monotonic() + timeout_s if timeout_s else None
    rates: dict[str, _Rate] = {}
    console = console or Console()
    progress = (
        None
        if as_json
        else Progress(
            TextColumn("[bold]{task.fields[channel]:<5}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
    )
    tasks: dict[str, TaskID] = {}
    summary: dict[str, Any] | None = None
    if progress:
        progress.start()
    try:
        while True:
            summary = snapshot(blasts, blast_id, live)
            if summary is None:
                raise LookupError(blast_id)
            now = time.monotonic()
            lines: dict[str, Any] = {}
            for channel, c in summary["counts"].items():
                done = c["targeted"] - c["pending"] - c["deferred"]
                current, average = rates.setdefault(channel, _Rate()).add(now, c["sent"])
                eta = c["pending"] / current if current > 0 else None
                lines[channel] = {
                    **c,
                    "rate_per_s": round(current, 1),
                    "avg_rate_per_s": round(average, 1),
                    "eta_s": round(eta, 1) if eta is not None else None,
                }
                if progress:
                    detail = (
                        f"{current:,.0f}/s (avg {average:,.0f}/s)  ETA {eta:,.0f}s  "
                        if eta is not None
                        else f"{current:,.0f}/s  "
                    ) + (f"deferred {c['deferred']}  failed {c['failed']}  [{summary['status']}]")
                    if channel not in tasks:
                        tasks[channel] = progress.add_task(
                            "", total=max(c["targeted"], 1), channel=channel, detail=""
                        )
                    progress.update(
                        tasks[channel], completed=done, total=max(c["targeted"], 1), detail=detail
                    )
            if as_json:
                emit(
                    json.dumps(
                        {
                            "blast_id": blast_id,
                            "status": summary["status"],
                            "t": round(time.time(), 3),
                            "channels": lines,
                        }
                    )
                )
            if is_done(summary, until_idle=until_idle) and summary["counts_source"] == "live":
                summary = snapshot(blasts, blast_id) or summary  # idle by the counters: confirm
            if is_done(summary, until_idle=until_idle) or (deadline and now > deadline):
                return summary
            time.sleep(interval_s)
    finally:
        if progress:
            progress.stop()
