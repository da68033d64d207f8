"""Steer and read an emulator over HTTP, e.g. one running in another process.

In the emulator's own process, use its :class:`~emulators.recorder.Recorder` and
:class:`~emulators.faults.Faults` directly instead.
"""

from __future__ import annotations

from typing import Any

import httpx

from emulators.control import CONTROL_PREFIX
from emulators.recorder import RecordedRequest


class EmulatorClient:
    """A thin client of the ``/_emulator/*`` routes of one emulator."""

    def __init__(self, base_url: str, *, http: httpx.Client | None = None) -> None:
        """``http``: an ``httpx.Client`` to use (closed by :meth:`close` only if created here)."""
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=10.0, trust_env=False)
        self._base = base_url.rstrip("/") + CONTROL_PREFIX

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, self._base + path, **kwargs)
        response.raise_for_status()
        return response

    def faults(self) -> dict[str, Any]:
        """The current fault settings."""
        return dict(self._call("GET", "/faults").json())

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change some fault settings (see ``FaultConfig``); return all of them."""
        return dict(self._call("POST", "/faults", json=changes).json())

    def reset_faults(self) -> dict[str, Any]:
        """Turn every fault off."""
        return dict(self._call("DELETE", "/faults").json())

    def messages(self, since: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Accepted messages with ``seq >= since``, and the ``since`` of the next page."""
        page = self._call("GET", "/messages", params={"since": since}).json()
        return list(page["messages"]), int(page["next"])

    def requests(self, since: int = 0) -> tuple[list[RecordedRequest], int]:
        """Raw requests with ``seq >= since``, and the ``since`` of the next page."""
        page = self._call("GET", "/requests", params={"since": since}).json()
        return [RecordedRequest.from_json(r) for r in page["requests"]], int(page["next"])

    def stats(self) -> dict[str, int]:
        """Requests by outcome (``"201"``, ``"429"``, ``"timeout"``, …) and callback counts."""
        return {str(k): int(v) for k, v in self._call("GET", "/stats").json().items()}

    def reset(self) -> None:
        """Forget messages, raw requests and counters; turn every fault off."""
        self._call("POST", "/reset")

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> EmulatorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
