"""The contract's JSON view of blasts (§6), shared by every blast store backend."""

from __future__ import annotations

from typing import Any

import structlog

from messaging.blasts.lifecycle import ENDED_STATUSES, counts_from_states
from messaging.ports import BlastRecord, ByChannel, LiveCounts

log = structlog.get_logger(__name__)


class Summaries:
    """``summaries()`` for a store that has ``state_counts()``."""

    def state_counts(self, blast_ids: list[str]) -> dict[str, ByChannel]:
        raise NotImplementedError

    def click_counts(self, blast_ids: list[str]) -> dict[str, dict[str, int]]:
        """Recipients who clicked a tracked link, per blast and channel (from the ledger:
        a click moves no row, so the state counts and live counters do not hold it)."""
        return {}

    def variant_counts(self, blast_id: str) -> dict[int, ByChannel]:
        """``{variant: {channel: {state: rows, "clicked": rows}}}`` of a blast's ledger."""
        return {}

    def summaries(
        self, records: list[BlastRecord], live: LiveCounts | None = None
    ) -> list[dict[str, Any]]:
        """The contract's JSON view (§6) of each blast, counts included.

        With ``live``, a running blast's counts come from its live counters (one Redis read,
        instead of a grouped scan of its ledger rows per look); an ended blast's, and any
        whose counters are missing or unreadable, from the ledger.
        """
        running = [r.blast_id for r in records if r.status not in ENDED_STATUSES]
        counted: dict[str, ByChannel | None] = {}
        if live is not None and running:
            try:
                counted = dict(live(running))
            except Exception as exc:  # Redis down or slow: the ledger still answers
                log.warning("blast.live_counts_unavailable", error_type=type(exc).__name__)
        from_ledger = self.state_counts(
            [r.blast_id for r in records if counted.get(r.blast_id) is None]
        )
        clicks = self.click_counts([r.blast_id for r in records])
        result = []
        for r in records:
            live_counts = counted.get(r.blast_id)
            by_channel = live_counts if live_counts is not None else from_ledger[r.blast_id]
            result.append(
                summary(
                    r,
                    by_channel,
                    source="ledger" if live_counts is None else "live",
                    clicks=clicks.get(r.blast_id),
                    variants=self.variant_counts(r.blast_id) if r.alert.variants else None,
                )
            )
        return result


def summary(
    record: BlastRecord,
    by_channel: dict[str, dict[str, int]],
    *,
    source: str = "ledger",
    clicks: dict[str, int] | None = None,
    variants: dict[int, ByChannel] | None = None,
) -> dict[str, Any]:
    """``{"blast_id", "topic", "status", "created_at", "counts": {...}, ...}``.

    ``counts_source`` says where the counts came from: ``live`` (the Redis counters of a
    running blast, reconciled with the ledger every scheduler pass) or ``ledger``.
    """
    channels = record.alert.channels
    extra: dict[str, Any] = {}
    if record.status == "paused":  # contract §6: a paused blast says why
        extra = {"pause_reason": record.pause_reason, "pause_detail": record.pause_detail}
    for name in ("requested_by", "approved_by"):
        if getattr(record, name) is not None:
            extra[name] = getattr(record, name)
    if record.send_at is not None:
        extra["send_at"] = record.send_at.isoformat()
    if variants is not None:  # contract §4: every count also per variant
        extra["variants"] = {
            str(v): {c: _counts(variants.get(v, {}).get(c, {})) for c in channels}
            for v in range(len(record.alert.variants or ()))
        }
    return {
        "blast_id": record.blast_id,
        "topic": record.topic,
        "status": record.status,
        "priority": record.priority,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "dry_run": record.alert.dry_run,
        "test": bool(record.alert.test_recipients),
        "counts": {
            c: counts_from_states(by_channel.get(c, {}), clicked=(clicks or {}).get(c, 0))
            for c in channels
        },
        "audience": record.stats,
        "counts_source": source,
        **extra,
    }


def _counts(by_state: dict[str, int]) -> dict[str, int]:
    """The contract's counts from states with a ``clicked`` pseudo-state beside them."""
    states = dict(by_state)
    return counts_from_states(states, clicked=states.pop("clicked", 0))
