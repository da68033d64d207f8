"""In-memory providers for unit tests: they record what they are asked to send."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence

from messaging.errors import SendError
from messaging.providers.base import (
    EmailBatch,
    EmailCall,
    EmailRecipient,
    SmsMessage,
    SmsReceipt,
    SmsResult,
)


class InMemorySms:
    """Records every SMS; ``errors`` maps a number to the error its sends return."""

    def __init__(self, errors: dict[str, SendError] | None = None) -> None:
        self.sent: list[SmsMessage] = []
        self.errors = dict(errors or {})
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def send_many(
        self,
        messages: Sequence[SmsMessage],
        gate: Callable[[SmsMessage], bool] | None = None,
        reslot: Callable[[SmsMessage], float | None] | None = None,
    ) -> list[SmsResult]:
        """See :class:`~messaging.providers.base.SmsTransport`."""
        results: list[SmsResult] = []
        with self._lock:
            for m in messages:
                if gate is not None and not gate(m):
                    results.append(None)
                    continue
                error = self.errors.get(m.to)
                if error is not None:
                    results.append(error)
                    continue
                self.sent.append(m)
                results.append(SmsReceipt(f"SM{next(self._ids):032x}", 1))
        return results


class InMemoryEmail:
    """Records every email recipient; ``errors`` maps an address to the error a call that
    carries it fails with (as SendGrid fails a whole call for one bad address)."""

    def __init__(self, errors: dict[str, SendError] | None = None) -> None:
        self.sent: list[EmailRecipient] = []
        self.calls = 0
        self.errors = dict(errors or {})
        self._lock = threading.Lock()

    def send_batch(self, batch: EmailBatch) -> list[EmailCall]:
        """See :class:`~messaging.providers.base.EmailTransport`: one call per batch."""
        indices = tuple(range(len(batch.recipients)))
        with self._lock:
            for r in batch.recipients:
                if r.to in self.errors:
                    return [EmailCall(indices, error=self.errors[r.to])]
            self.calls += 1
            self.sent.extend(batch.personalized())
            return [EmailCall(indices, message_id=f"mem-{self.calls}")]
