"""Provider Protocols: what the senders need from an SMS and an email service.

Each Protocol is one method; :mod:`messaging.providers.memory` has in-memory versions for unit
tests, :mod:`twilio_sms` and :mod:`sendgrid_email` the real ones (official clients).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from messaging.errors import SendError


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One SMS to hand to the provider at (or after) ``send_at_s``, a local epoch time."""

    to: str
    body: str
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback: str | None = None
    #: Seconds the provider may keep trying; after that the carrier must drop it (send_by).
    validity_period_s: int | None = None
    send_at_s: float = 0.0
    #: An MMS image (https), sent as Twilio's ``MediaUrl``; None: a plain SMS.
    media_url: str | None = None


@dataclass(frozen=True, slots=True)
class SmsReceipt:
    """The provider accepted the message."""

    sid: str
    segments: int | None = None


#: One result per message: accepted, an error, or None when the gate closed before the call.
SmsResult = SmsReceipt | SendError | None


class SmsTransport(Protocol):
    """Sends many SMS concurrently; one result per message, in order."""

    def send_many(
        self,
        messages: Sequence[SmsMessage],
        gate: Callable[[SmsMessage], bool] | None = None,
        reslot: Callable[[SmsMessage], float | None] | None = None,
    ) -> list[SmsResult]:
        """Send each message at its slot if ``gate(message)`` still allows it right before
        the call (the blast may have been paused or canceled, the number may have said STOP).
        A message that would leave late, or a retry, asks ``reslot`` for a new slot (None:
        hold it).

        Errors are returned, not raised, so one bad number fails alone.
        """
        ...


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ per field, and
# a batch makes one per recipient (as Outcome, messaging/ports/ledger.py).
@dataclass(slots=True)
class EmailRecipient:
    """One personalization: the address and what is particular to it."""

    to: str
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str] = field(default_factory=dict)
    custom_args: dict[str, str] = field(default_factory=dict)
    #: With a batch's shared bodies: tag -> this recipient's value (``text``/``html`` None).
    substitutions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SharedBodies:
    """Bodies sent once per call, personalised by each recipient's substitutions."""

    text: str | None
    html: str | None


@dataclass(frozen=True, slots=True)
class EmailBatch:
    """Up to 1000 recipients for one API call.

    With ``shared``, recipients without bodies of their own get the shared bodies with
    their ``substitutions`` applied; a recipient with its own ``text``/``html`` gets those.
    """

    from_email: str
    from_name: str | None
    recipients: Sequence[EmailRecipient]
    send_at_s: float = 0.0
    categories: tuple[str, ...] = ()
    shared: SharedBodies | None = None

    def uses_shared(self, r: EmailRecipient) -> bool:
        """True if ``r`` gets the shared bodies."""
        return self.shared is not None and r.text is None and r.html is None

    def personalized(self) -> list[EmailRecipient]:
        """Every recipient with the bodies it will see (for in-memory transports, tests)."""
        out = []
        for r in self.recipients:
            if self.shared is not None and self.uses_shared(r):
                text, html = self.shared.text, self.shared.html
                for tag, value in r.substitutions.items():
                    text = text.replace(tag, value) if text is not None else None
                    html = html.replace(tag, value) if html is not None else None
                r = replace(r, text=text, html=html, substitutions={})
            out.append(r)
        return out


@dataclass(frozen=True, slots=True)
class EmailCall:
    """What one provider call of a batch did, for the recipients it carried.

    A batch may take several calls (shared bodies, then oversized recipients one by one);
    each succeeds or fails on its own, so each recipient is settled once, by its own call.
    """

    #: Positions in ``batch.recipients`` of the recipients this call carried.
    indices: tuple[int, ...]
    #: The provider's message id when it accepted the call.
    message_id: str | None = None
    #: Why it failed (None: accepted).
    error: SendError | None = None


class EmailTransport(Protocol):
    """Sends one batch in as few calls as the provider allows; one outcome per call."""

    def send_batch(self, batch: EmailBatch) -> list[EmailCall]:
        """Send ``batch``; every recipient is in exactly one returned call. Errors are
        returned, not raised, so a later call's failure never hides an earlier success."""
        ...


@dataclass(frozen=True, slots=True)
class LoggedSms:
    """One message of the provider's message log (what the sweep asks about in-doubt rows)."""

    sid: str
    to: str
    from_number: str | None
    body: str
    #: When the provider created it, epoch seconds (None when it did not say).
    created_at_s: float | None


class SmsLog(Protocol):
    """The provider's log of messages it accepted."""

    def recent_to(self, to: str, from_number: str | None, since_s: float) -> list[LoggedSms]:
        """Messages to ``to`` (from ``from_number`` when given) created since ``since_s``."""
        ...
