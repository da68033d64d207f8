"""One clear log line per outage of a service we depend on, not a traceback per failed call.

When Redis restarts or PostgreSQL drops our sessions, every worker thread's call fails the
same way for a few seconds, and libraries (dramatiq, above all) log each failure with its
traceback: hundreds of lines that bury the one fact an operator needs. This module
recognises those errors (by type, walking ``__cause__``/``__context__``), turns the first of
an outage into one line — ``"outage": "redis"``, ``"error"``: the error's first line — and
drops the repeats until the service has been quiet for :data:`OUTAGE_QUIET_S`.

It imports nothing of ours and no client library: errors are matched by module and name
(dramatiq's own connection messages, which carry no exception, by their words; our events by
their ``error_type``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

#: An outage is over once its errors have stopped for this long; the next error starts a new
#: one (and logs its line).
OUTAGE_QUIET_S = 30.0

#: (module prefix, class names) -> service. A class matches if its own or a base class's
#: module and name match.
_OUTAGE_TYPES: tuple[tuple[str, frozenset[str], str], ...] = (
    ("redis", frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError"}), "redis"),
    ("sqlalchemy", frozenset({"OperationalError", "InterfaceError"}), "database"),
    ("psycopg", frozenset({"OperationalError", "InterfaceError"}), "database"),
)


def outage_service(exc: BaseException | None) -> str | None:
    """The service an exception says is down (``redis``, ``database``), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for cls in type(exc).__mro__:
            module = cls.__module__ or ""
            for prefix, names, service in _OUTAGE_TYPES:
                if module.split(".", 1)[0] == prefix and cls.__name__ in names:
                    return service
        exc = exc.__cause__ or exc.__context__
    return None


#: dramatiq talks only to Redis; these words in its messages (which carry no exception) mean
#: Redis is away: "Consumer encountered a connection error", "… due to a connection error".
_DRAMATIQ_OUTAGE_WORDS = ("connection error", "connection refused", "error 111")
#: Our own events name the error's type (``error_type``); these are a dependency away.
_EVENT_ERROR_TYPES = {
    "ConnectionError": "redis",
    "TimeoutError": "redis",
    "BusyLoadingError": "redis",
    "OperationalError": "database",
    "InterfaceError": "database",
}


def record_service(record: logging.LogRecord) -> str | None:
    """The service a stdlib log record says is down, from its exception or, for dramatiq's
    own connection messages, its words."""
    exc = record.exc_info[1] if record.exc_info else None
    service = outage_service(exc)
    if service is None and record.name.startswith("dramatiq"):
        message = record.getMessage().lower()
        if any(word in message for word in _DRAMATIQ_OUTAGE_WORDS):
            service = "redis"
    return service


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}"


class OutageLines(logging.Filter):
    """A structlog processor and a stdlib logging filter sharing one memory of outages.

    As a processor (before ``format_exc_info``) it replaces an outage's traceback by one
    line. As a filter (on the stdlib handler) it drops the repeats of an outage's errors.
    """

    def __init__(
        self, quiet_s: float = OUTAGE_QUIET_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._quiet_s = quiet_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _repeat(self, service: str) -> bool:
        """Note an error of ``service``; True if it continues an outage already logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(service)
            self._last[service] = now
        return last is not None and now - last < self._quiet_s

    def filter(self, record: logging.LogRecord) -> bool:
        """stdlib: keep the first record of an outage, drop its repeats."""
        service = record_service(record)
        # The first is kept: the formatter's processor chain makes it one line (__call__).
        return service is None or not self._repeat(service)

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """structlog: an outage's traceback becomes ``outage`` and a one-line ``error``; our
        own events' repeats within an outage are dropped (stdlib records' by :meth:`filter`)."""
        exc_info = event_dict.get("exc_info")
        exc: BaseException | None = None
        if isinstance(exc_info, BaseException):
            exc = exc_info
        elif isinstance(exc_info, tuple) and len(exc_info) == 3:
            exc = exc_info[1]
        service = outage_service(exc)
        if service is not None and exc is not None:
            event_dict.pop("exc_info", None)
            event_dict.setdefault("error", _first_line(exc))
        record = event_dict.get("_record")
        if isinstance(record, logging.LogRecord):  # a library's: filter() already judged it
            service = service or record_service(record)
        else:  # ours
            service = service or _EVENT_ERROR_TYPES.get(str(event_dict.get("error_type")))
            if service is not None and self._repeat(service):
                raise structlog.DropEvent
        if service is not None:
            event_dict["outage"] = service
        return event_dict
