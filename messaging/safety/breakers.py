"""Circuit breakers: a blast that is going wrong pauses itself and says why (contract §13).

Over a window of the blast's most recent finished sends (default the last 500), the sweep
looks at the share that carriers filtered (Twilio 30007/30034, which arrive by status
callback), the share that failed, and the share of opt-out replies to the blast; past a
threshold (defaults 2 %, 10 %, 3 %) the blast pauses with ``pause_reason``
``carrier_filtering``, ``failure_rate`` or ``optout_rate`` and a one-line ``pause_detail``
with the numbers, and the pause is in the audit log from ``fleet``. Thresholds come from the
alert's ``"breakers"`` (any subset), else ``RAPID_BREAKERS`` (parsed by the settings), else
the defaults. Nothing is judged before the window holds :data:`MIN_SAMPLE` sends: two
failures out of ten is noise.

Opt-out replies are counted over the blast so far against its SMS sends so far (replies
are attributed to the blast they answer, and arrive minutes after the sends that caused
them, so a send-window would undercount them). The CloudWatch alarm stays as a second line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from messaging.access.audit import Actor, AuditAction, AuditLog, Source
from messaging.blasts.lifecycle import PauseReason
from messaging.ports import BlastRecord, BreakerWindow, RecentOutcomes

log = structlog.get_logger(__name__)

#: Twilio error codes that mean "a carrier filtered this message" (spam, unregistered 10DLC).
CARRIER_FILTERING_CODES = frozenset({"30007", "30034"})
#: Failures that say nothing about the message, its audience or the carriers: our own
#: worker died mid-send (the in-doubt settlement's ``lost_in_flight``). A fleet restart must
#: not pause a good blast for ``failure_rate``; the fleet's own alarms cover crashes.
NOT_COUNTED_AS_FAILURES = frozenset({"lost_in_flight"})
#: Sends a window must hold before any share is judged.
MIN_SAMPLE = 100
#: A blast's breakers are evaluated at most this often (one indexed read of its last sends).
EVALUATE_EVERY_S = 5.0
FLEET = Actor("fleet", Source.FLEET)


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """Window size (sends) and the share (0..1) past which each breaker trips."""

    window: int = 500
    carrier_filtering: float = 0.02
    failure_rate: float = 0.10
    optout_rate: float = 0.03

    def merged(self, overrides: Mapping[str, float | int] | None) -> BreakerLimits:
        """These limits with some replaced (an alert's ``breakers``)."""
        if not overrides:
            return self
        values = {k: v for k, v in overrides.items() if v is not None}
        if "window" in values:
            values["window"] = int(values["window"])
        return replace(self, **values)  # type: ignore[arg-type]


class ReplyCounts(Protocol):
    """Replies answering a blast, per kind (``opt_out``, ``help``, …)."""

    def counts(self, blast_id: str) -> dict[str, int]:
        """Per kind."""
        ...


class Pauser(Protocol):
    """The one move this needs from the blast lifecycle."""

    def pause(
        self, blast_id: str, reason: PauseReason = PauseReason.OPERATOR, detail: str | None = None
    ) -> bool:
        """``expanding|sending → paused`` with why; True if it moved."""
        ...


def tripped(
    limits: BreakerLimits, recent: RecentOutcomes, optouts: int
) -> tuple[PauseReason, str] | None:
    """The first breaker past its threshold, with a one-line detail; None if all hold."""
    if recent.sends >= min(limits.window, MIN_SAMPLE):
        checks = (
            (PauseReason.CARRIER_FILTERING, recent.carrier_filtered, limits.carrier_filtering,
             "filtered by carriers (Twilio 30007/30034)"),
            (PauseReason.FAILURE_RATE, recent.failed, limits.failure_rate, "failed"),
        )  # fmt: skip
        for reason, n, limit, what in checks:
            if n / recent.sends > limit:
                return reason, (
                    f"{n} of the last {recent.sends} sends {what}: "
                    f"{n / recent.sends:.1%} > {limit:.1%}"
                )
    if recent.sms_sent >= min(limits.window, MIN_SAMPLE) and optouts / recent.sms_sent > (
        limits.optout_rate
    ):
        return PauseReason.OPTOUT_RATE, (
            f"{optouts} opt-out replies to {recent.sms_sent} texts sent: "
            f"{optouts / recent.sms_sent:.1%} > {limits.optout_rate:.1%}"
        )
    return None


class Breakers:
    """Evaluates a sending blast's breakers and pauses it when one trips."""

    def __init__(
        self,
        window: BreakerWindow,
        replies: ReplyCounts | None,
        lifecycle: Pauser,
        audit: AuditLog | None,
        *,
        defaults: BreakerLimits | None = None,
        every_s: float = EVALUATE_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._replies = replies
        self._lifecycle = lifecycle
        self._audit = audit
        self._defaults = defaults or BreakerLimits()
        self._every_s = every_s
        self._monotonic = monotonic
        self._checked: dict[str, float] = {}

    def limits(self, blast: BlastRecord) -> BreakerLimits:
        """The blast's limits: its alert's ``breakers`` over the fleet's defaults."""
        own = blast.alert.breakers
        return self._defaults.merged(own.model_dump(exclude_none=True) if own else None)

    def check(self, blast: BlastRecord) -> PauseReason | None:
        """Pause the blast if a breaker tripped; returns the reason (None: it sends on)."""
        now = self._monotonic()
        if now - self._checked.get(blast.blast_id, -self._every_s) < self._every_s:
            return None
        self._checked[blast.blast_id] = now
        limits = self.limits(blast)
        recent = self._window.recent(blast.blast_id, limits.window)
        optouts = self._replies.counts(blast.blast_id).get("opt_out", 0) if self._replies else 0
        verdict = tripped(limits, recent, optouts)
        if verdict is None:
            return None
        reason, detail = verdict
        if not self._lifecycle.pause(blast.blast_id, reason, detail):
            return None  # paused, canceled or ended meanwhile
        log.warning(
            "fleet.breaker_tripped", blast_id=blast.blast_id, reason=str(reason), detail=detail
        )
        if self._audit is not None:
            self._audit.record(
                FLEET,
                AuditAction.BLAST_PAUSED,
                blast_id=blast.blast_id,
                detail={"reason": reason.value, "detail": detail},
            )
        return reason
