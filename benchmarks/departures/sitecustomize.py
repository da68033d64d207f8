"""Departure stamps for the benchmarks (never imported by the product).

Put this folder on ``PYTHONPATH`` with ``BENCH_DEPARTURES_DIR`` set, and every process that
starts with it stamps each Twilio request as our client hands it to aiohttp (the sender's
own view of guarantee 4, before the network and the emulator's scheduling), writing the
stamps to ``<dir>/<pid>.json`` every 0.2 s and at exit. The emulator stamps arrivals; the
two together say whether a busy window was sent that way or bunched after it left.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

_DIR = os.environ.get("BENCH_DEPARTURES_DIR")


def _install(directory: Path) -> None:
    from messaging.providers import twilio_sms

    stamps: list[float] = []
    state = {"pid": 0}

    def flush() -> None:
        if stamps:
            # Whole or not at all: the benchmark may read the file while this writes it
            # (a reader once found it empty, truncated for the write).
            path = directory / f"{os.getpid()}.json"
            partial = path.with_suffix(f".{threading.get_ident()}.tmp")
            partial.write_text(json.dumps(stamps))
            os.replace(partial, path)

    def flusher() -> None:
        while True:
            time.sleep(0.2)
            flush()

    original = twilio_sms.RebasedAsyncHttpClient.request

    async def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        if state["pid"] != os.getpid():  # first request of this process (forked ones too)
            state["pid"] = os.getpid()
            stamps.clear()
            threading.Thread(target=flusher, daemon=True).start()
        stamps.append(time.time())
        return await original(self, *args, **kwargs)

    twilio_sms.RebasedAsyncHttpClient.request = request  # type: ignore[method-assign]
    atexit.register(flush)


if _DIR:
    _install(Path(_DIR))
