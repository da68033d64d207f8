"""The suppression list: phones and emails that must never be messaged (contract §9.2).

A tiny Protocol with an in-memory implementation for unit tests and a SQL one for the system
of record. Values are kept in one canonical form: E.164 for phones, the whole address
lower-cased for emails (mailbox providers treat local parts case-insensitively, and a STOP
must not be dodged by ``Jane@`` vs ``jane@``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from messaging.errors import InputError

Channel = Literal["sms", "email"]
CHANNELS: tuple[Channel, ...] = ("sms", "email")


@dataclass(frozen=True, slots=True)
class Suppression:
    """One active suppression."""

    channel: Channel
    value: str
    reason: str
    source: str
    created_at: datetime


class SuppressionList(Protocol):
    """Where suppressions live."""

    def add(self, channel: Channel, value: str, *, reason: str, source: str) -> bool:
        """Suppress ``value``; True if it was not suppressed before."""
        ...

    def remove(self, channel: Channel, value: str, *, source: str) -> bool:
        """Lift a suppression; True if there was one."""
        ...

    def lookup(self, channel: Channel, value: str) -> Suppression | None:
        """The active suppression of ``value``, if any."""
        ...

    def suppressed_among(self, channel: Channel, values: list[str]) -> set[str]:
        """Which of ``values`` are suppressed (one round trip for a batch)."""
        ...


def suppression_key(channel: Channel, value: str) -> str:
    """The canonical stored form of an already-normalised phone or email."""
    return value.lower() if channel == "email" else value


def classify(raw: str, default_region: str = "US") -> tuple[Channel, str]:
    """Tell a phone from an email and normalise it; :class:`InputError` if it is neither."""
    from messaging.supporters.normalize import FieldRejected, normalize_email, normalize_phone

    raw = raw.strip()
    try:
        if "@" in raw:
            return "email", suppression_key("email", normalize_email(raw))
        return "sms", normalize_phone(raw, default_region)
    except FieldRejected as exc:
        kind = "email address" if "@" in raw else "phone number"
        raise InputError(f"not a valid {kind}: {exc.reason}") from None


class NotifyingSuppressionList:
    """Wraps a :class:`SuppressionList` and calls ``on_change`` after every addition.

    Senders pace a batch over several seconds after checking it; the notification lets them
    re-check the rest of the batch when a STOP lands meanwhile (contract §9.2).
    """

    def __init__(self, inner: SuppressionList, on_change: Callable[[], None]) -> None:
        self._inner = inner
        self._on_change = on_change

    def add(self, channel: Channel, value: str, *, reason: str, source: str) -> bool:
        """See :meth:`SuppressionList.add`."""
        added = self._inner.add(channel, value, reason=reason, source=source)
        self._on_change()
        return added

    def remove(self, channel: Channel, value: str, *, source: str) -> bool:
        """See :meth:`SuppressionList.remove`."""
        return self._inner.remove(channel, value, source=source)

    def lookup(self, channel: Channel, value: str) -> Suppression | None:
        """See :meth:`SuppressionList.lookup`."""
        return self._inner.lookup(channel, value)

    def suppressed_among(self, channel: Channel, values: list[str]) -> set[str]:
        """See :meth:`SuppressionList.suppressed_among`."""
        return self._inner.suppressed_among(channel, values)
