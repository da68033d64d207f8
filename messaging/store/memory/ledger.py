"""The ledger's in-memory twin: the same expansion, claim and sweep semantics, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from messaging.blasts.lifecycle import OPEN, BlastStatus, RowState
from messaging.content.alert import Alert
from messaging.content.variants import held_until, is_held, variant_of
from messaging.ports import (
    TEMPLATE_FIELDS,
    CapScreen,
    Claimed,
    DryRun,
    ExpandedPage,
    Outcome,
    PageWritten,
    SendingRow,
)
from messaging.store.memory.audience import AudienceFilter
from messaging.store.memory.tables import MemoryTables, Row

LOST_IN_FLIGHT = "lost_in_flight"


def _destination(channel: str, person: dict[str, Any]) -> str | None:
    if channel == "sms":
        return person.get("phone") or None
    email = person.get("email")
    # Emails are compared whole and lower-cased: Jane@ and jane@ are one mailbox.
    return email.lower() if email else None


def _opted_in(channel: str, person: dict[str, Any]) -> bool:
    return bool(person.get("sms_opt_in" if channel == "sms" else "email_opt_in"))


class _Audience:
    """Topic subscribers (or test recipients) ∩ the alert's filter, by supporter id."""

    def __init__(self, tables: MemoryTables, alert: Alert, topic: str) -> None:
        self._t = tables
        self.alert = alert
        self._topic = topic

    def members(self) -> list[int]:
        t, alert = self._t, self.alert
        if alert.test_recipients:
            phones = {v for v in alert.test_recipients if "@" not in v}
            emails = {v.lower() for v in alert.test_recipients if "@" in v}
            ids = [
                sid
                for sid, p in t.supporters.items()
                if p.get("phone") in phones or (p.get("email") or "").lower() in emails
            ]
        else:
            ids = [sid for topic, sid in t.subscriptions if topic == self._topic]
        keep = AudienceFilter(t, alert.audience)
        return sorted(
            sid for sid in ids if sid in t.supporters and keep.matches(sid, t.supporters[sid])
        )

    def page(self, after: int, page_size: int) -> list[int]:
        return [sid for sid in self.members() if sid > after][:page_size]

    def stats(self) -> dict[str, Any]:
        people = [self._t.supporters[sid] for sid in self.members()]
        result: dict[str, Any] = {"audience": len(people)}
        for channel in self.alert.channels:
            result[channel] = {
                "eligible": sum(
                    1 for p in people if _opted_in(channel, p) and _destination(channel, p)
                ),
                "no_consent": sum(1 for p in people if not _opted_in(channel, p)),
                "no_address": sum(
                    1 for p in people if _opted_in(channel, p) and not _destination(channel, p)
                ),
            }
        return result


class MemoryLedger:
    """:class:`~messaging.ports.LedgerStore` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    # --- expansion ---------------------------------------------------------------------

    def _write_page(
        self,
        into: dict[tuple[str, str, int], Row],
        blast_id: str,
        channel: str,
        ids: list[int],
        capped: CapScreen | None = None,
        alert: Alert | None = None,
    ) -> dict[str, list[int]]:
        now = datetime.now(UTC)
        variants = len(alert.variants or ()) if alert is not None else 0

        def held(sid: int) -> bool:
            return alert is not None and is_held(alert, sid)

        def variant(sid: int) -> int | None:
            return variant_of(blast_id, sid, variants) if variants and not held(sid) else None

        live = {
            r.destination
            for (b, c, _), r in into.items()
            if b == blast_id and c == channel and r.state != RowState.DUPLICATE
        }
        written: dict[str, list[int]] = {}
        for sid in ids:
            person = self._t.supporters[sid]
            destination = _destination(channel, person)
            if not _opted_in(channel, person) or destination is None:
                continue
            if (blast_id, channel, sid) in into:  # a re-run of the page writes nothing
                continue
            if destination in live:
                state = RowState.DUPLICATE
            elif (channel, destination) in self._t.suppressions:
                state = RowState.SUPPRESSED
            elif held(sid):  # pick_winner: waits for the winner (messaging/blasts/winner.py)
                state = RowState.DEFERRED
            else:
                state = RowState.PENDING
            live.add(destination)
            into[(blast_id, channel, sid)] = Row(
                blast_id, channel, sid, destination, state, now, now, variant=variant(sid)
            )
            if state == RowState.DEFERRED:
                into[(blast_id, channel, sid)].deferred_until = held_until(now)
            written.setdefault(state, []).append(sid)
        over = capped(channel, written.get(RowState.PENDING, [])) if capped else set()
        for sid in over:
            into[(blast_id, channel, sid)].state = RowState.CAPPED
        if over:
            written[RowState.PENDING] = [i for i in written[RowState.PENDING] if i not in over]
            written[RowState.CAPPED] = sorted(over)
        return written

    def expand_page(
        self,
        blast_id: str,
        alert: Alert,
        topic: str,
        after: int,
        page_size: int,
        before_commit: Callable[[str, ExpandedPage], None],
        *,
        capped: CapScreen | None = None,
    ) -> PageWritten | None:
        with self._t.lock:
            ids = _Audience(self._t, alert, topic).page(after, page_size)
            if not ids:
                return None
            pages: dict[str, ExpandedPage] = {}
            for channel in alert.channels:
                written = self._write_page(
                    self._t.deliveries, blast_id, channel, ids, capped, alert
                )
                pages[channel] = ExpandedPage(
                    sorted(written.get(RowState.PENDING, [])),
                    {state: len(i) for state, i in written.items()},
                )
                before_commit(channel, pages[channel])
            if blast_id in self._t.blasts:
                self._t.blasts[blast_id].update(
                    expansion_cursor=ids[-1], updated_at=datetime.now(UTC)
                )
            return PageWritten(ids[-1], pages, len(ids) < page_size)

    def audience_stats(self, alert: Alert, topic: str) -> dict[str, Any]:
        with self._t.lock:
            return _Audience(self._t, alert, topic).stats()

    def dry_run(
        self,
        blast_id: str,
        alert: Alert,
        topic: str,
        page_size: int,
        estimate: Callable[[Any], dict[str, Any]],
        heartbeat: Callable[[], None],
        *,
        capped: CapScreen | None = None,
    ) -> DryRun:
        with self._t.lock:
            audience = _Audience(self._t, alert, topic)
            scratch = {k: r for k, r in self._t.deliveries.items() if k[0] == blast_id}
            counts: dict[str, dict[str, int]] = {c: {} for c in alert.channels}
            cursor, pages = 0, 0
            while ids := audience.page(cursor, page_size):
                for channel in alert.channels:
                    written = self._write_page(scratch, blast_id, channel, ids, capped, alert)
                    for state, sids in written.items():
                        counts[channel][state] = counts[channel].get(state, 0) + len(sids)
                cursor, pages = ids[-1], pages + 1
                heartbeat()
                if len(ids) < page_size:  # a short page: the audience ended in it
                    break
            view = _MemoryPendingView(self._t, list(scratch.values()))
            return DryRun(pages, counts, audience.stats(), estimate(view))

    def inspect_pending(
        self, blast_id: str, report: Callable[[Any], dict[str, Any]]
    ) -> dict[str, Any]:
        with self._t.lock:
            rows = [r for k, r in self._t.deliveries.items() if k[0] == blast_id]
            return report(_MemoryPendingView(self._t, rows))

    def refresh_statistics(self, rows_written: int) -> bool:
        return False

    def refresh_audience_statistics(self, audience_rows: int) -> bool:
        return False

    # --- claims and outcomes -----------------------------------------------------------

    def claim(
        self,
        blast_id: str,
        channel: str,
        supporter_ids: Sequence[int],
        fields: Sequence[str] = TEMPLATE_FIELDS,
    ) -> list[Claimed]:
        now = datetime.now(UTC)
        claimed = []
        with self._t.lock:
            for sid in sorted(set(supporter_ids)):
                row = self._t.deliveries.get((blast_id, channel, sid))
                if row is None or row.state != RowState.PENDING:
                    continue
                row.state, row.attempts, row.updated_at = RowState.SENDING, row.attempts + 1, now
                person = self._t.supporters.get(sid, {})
                values = {f: person.get(f) or "" for f in TEMPLATE_FIELDS if f in fields}
                claimed.append(
                    Claimed(sid, row.destination, row.attempts, values, person.get("first_sms_at"))
                )
        return claimed

    def record(self, blast_id: str, channel: str, outcomes: Sequence[Outcome]) -> None:
        now = datetime.now(UTC)
        with self._t.lock:
            for o in outcomes:
                row = self._t.deliveries.get((blast_id, channel, o.supporter_id))
                if row is None or row.state != RowState.SENDING:
                    continue
                row.state, row.provider_message_id, row.sender = (
                    o.state,
                    o.provider_message_id,
                    o.sender,
                )
                row.error_code, row.error = o.error_code, (o.error or None) and o.error[:1000]
                row.segments, row.deferred_until, row.updated_at = o.segments, o.deferred_until, now
                row.sent_at = now if o.state == RowState.SENT else None
                parked = self._t.early_statuses.pop(o.provider_message_id or "", None)
                if channel == "sms" and o.state == RowState.SENT and parked is not None:
                    row.state, row.updated_at = parked["state"], parked["received_at"]
                    if parked["state"] == RowState.DELIVERED:
                        row.delivered_at = parked["received_at"]
                    else:
                        row.error_code, row.error = parked["error_code"], parked["error"]

    def claim_first_contact(self, supporter_ids: Sequence[int]) -> set[int]:
        taken = set()
        with self._t.lock:
            for sid in supporter_ids:
                person = self._t.supporters.get(sid)
                if person is not None and person.get("first_sms_at") is None:
                    person["first_sms_at"] = datetime.now(UTC)
                    taken.add(sid)
        return taken

    def release_first_contact(self, supporter_ids: Sequence[int]) -> None:
        with self._t.lock:
            for sid in supporter_ids:
                if sid in self._t.supporters:
                    self._t.supporters[sid]["first_sms_at"] = None

    # --- sweep and kill switch ---------------------------------------------------------

    def open_ids(
        self, blast_id: str, channel: str, state: str, after: int, limit: int
    ) -> list[int]:
        with self._t.lock:
            ids = sorted(
                r.supporter_id
                for r in self._t.rows_of(blast_id)
                if r.channel == channel and r.state == state and r.supporter_id > after
            )
        return ids[:limit]

    def _move(self, rows: list[Row], to_state: str) -> int:
        now = datetime.now(UTC)
        for r in rows:
            r.state, r.updated_at = to_state, now
        return len(rows)

    def close_open(self, blast_id: str, to_state: str, from_states: Sequence[str]) -> int:
        with self._t.lock:
            rows = [r for r in self._t.rows_of(blast_id) if r.state in from_states]
            return self._move(rows, to_state)

    def close_ids(
        self, blast_id: str, channel: str, supporter_ids: Sequence[int], to_state: str
    ) -> int:
        with self._t.lock:
            rows = [self._t.deliveries.get((blast_id, channel, sid)) for sid in set(supporter_ids)]
            return self._move([r for r in rows if r and r.state == RowState.PENDING], to_state)

    def has_open(self, blast_id: str) -> bool:
        with self._t.lock:
            return any(r.state in OPEN for r in self._t.rows_of(blast_id))

    def has_state(self, blast_id: str, state: str) -> bool:
        with self._t.lock:
            return any(r.state == state for r in self._t.rows_of(blast_id))

    def release_due(self, now: datetime, limit: int) -> list[tuple[str, str, int]]:
        with self._t.lock:
            sending = {
                b for b, blast in self._t.blasts.items() if blast["status"] == BlastStatus.SENDING
            }
            due = sorted(
                (
                    r
                    for r in self._t.deliveries.values()
                    if r.state == RowState.DEFERRED
                    and r.blast_id in sending
                    and r.deferred_until is not None
                    and r.deferred_until <= now
                ),
                key=lambda r: (r.deferred_until, r.supporter_id),
            )[:limit]
            for r in due:
                r.state, r.updated_at = RowState.PENDING, now
            return [(r.blast_id, r.channel, r.supporter_id) for r in due]

    def email_fallback(
        self, blast_id: str, supporter_ids: Sequence[int]
    ) -> tuple[set[int], list[int]]:
        reaching = (RowState.PENDING, RowState.SENDING, RowState.SENT, RowState.DELIVERED)
        with self._t.lock:
            eligible: dict[int, str] = {}
            for sid in sorted(set(supporter_ids)):
                person = self._t.supporters.get(sid, {})
                address = _destination("email", person)
                consents = _opted_in("email", person) and address is not None
                if consents and ("email", address) not in self._t.suppressions:
                    eligible[sid] = str(address)
            live = {
                r.destination: r.state
                for r in self._t.rows_of(blast_id)
                if r.channel == "email" and r.state != RowState.DUPLICATE
            }
            reached = {sid for sid, a in eligible.items() if live.get(a) in reaching}
            added: list[int] = []
            now = datetime.now(UTC)
            for sid, address in eligible.items():
                if (blast_id, "email", sid) in self._t.deliveries or address in live:
                    continue
                self._t.deliveries[(blast_id, "email", sid)] = Row(
                    blast_id, "email", sid, address, RowState.PENDING, now, now
                )
                live[address] = RowState.PENDING
                added.append(sid)
            return reached | set(added), added

    def fail_stuck(self, blast_id: str, claimed_before: datetime) -> int:
        with self._t.lock:
            rows = [
                r
                for r in self._t.rows_of(blast_id)
                if r.state == RowState.SENDING and r.updated_at < claimed_before
            ]
            for r in rows:
                r.error_code = LOST_IN_FLIGHT
                r.error = "worker lost between claim and outcome; not re-sent to avoid a duplicate"
            return self._move(rows, RowState.FAILED)

    def sending_rows(self, blast_id: str, claimed_before: datetime) -> list[SendingRow]:
        with self._t.lock:
            out = []
            for r in self._t.rows_of(blast_id):
                if r.state != RowState.SENDING or r.updated_at >= claimed_before:
                    continue
                person = self._t.supporters.get(r.supporter_id) or {}
                fields = {f: person.get(f) or "" for f in TEMPLATE_FIELDS}
                claimed = Claimed(
                    r.supporter_id, r.destination, r.attempts, fields, person.get("first_sms_at")
                )
                out.append(SendingRow(r.channel, claimed, r.updated_at))
        return sorted(out, key=lambda s: (s.channel, s.claimed.supporter_id))


class _MemoryPendingView:
    """:class:`~messaging.ports.PendingView` over a dry run's scratch rows."""

    def __init__(self, tables: MemoryTables, rows: list[Row]) -> None:
        self._t = tables
        self._rows = sorted(rows, key=lambda r: r.supporter_id)

    def _pending(self, channel: str) -> list[Row]:
        return [r for r in self._rows if r.channel == channel and r.state == RowState.PENDING]

    def pending_count(self, channel: str) -> int:
        return len(self._pending(channel))

    def sms_sample(self, limit: int) -> list[tuple[dict[str, Any], datetime | None]]:
        people = [self._t.supporters[r.supporter_id] for r in self._pending("sms")[:limit]]
        return [
            ({f: p.get(f) or "" for f in TEMPLATE_FIELDS}, p.get("first_sms_at")) for p in people
        ]

    def sample(self, channel: str, limit: int) -> list[dict[str, Any]]:
        people = [self._t.supporters[r.supporter_id] for r in self._pending(channel)[:limit]]
        return [{f: p.get(f) or "" for f in TEMPLATE_FIELDS} for p in people]

    def sms_by_timezone(self) -> dict[str | None, int]:
        return self._by_timezone(self._pending("sms"))

    def sms_with_email_by_timezone(self) -> dict[str | None, int]:
        emails = {r.supporter_id: r.destination for r in self._rows if r.channel == "email"}
        live = {r.destination for r in self._pending("email")}
        return self._by_timezone(
            [r for r in self._pending("sms") if emails.get(r.supporter_id) in live]
        )

    def _by_timezone(self, rows: list[Row]) -> dict[str | None, int]:
        zones: dict[str | None, int] = {}
        for r in rows:
            tz = self._t.supporters[r.supporter_id].get("timezone")
            zones[tz] = zones.get(tz, 0) + 1
        return zones
