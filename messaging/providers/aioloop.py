"""One asyncio event loop per process, on its own thread, for provider I/O.

dramatiq actors run on ordinary threads; they hand coroutines to this loop and wait for the
results, so one process keeps hundreds of provider requests in flight with a handful of
worker threads (a real Twilio call takes ~200 ms: one-at-a-time sending caps at 5 msg/s).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (it spends a fraction of asyncio's CPU per
    request, and this loop carries every provider call), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # a platform without uvloop (Windows)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """A running event loop on a daemon thread."""

    def __init__(self, name: str = "provider-io") -> None:
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return self.submit(coro).result(timeout_s)

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
