"""An alert's audience in SQL, and the set-based expansion of one page into the ledger.

One ``INSERT … SELECT`` per page and channel: the topic's subscribers (or the test
recipients) ∩ the audience filter ∩ channel consent, with household duplicates and
suppressions decided in SQL, so nothing passes through Python row by row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement

from messaging.blasts.lifecycle import RowState
from messaging.content.alert import Alert
from messaging.content.alert import Audience as AudienceFilter
from messaging.content.variants import (
    SHARE_BUCKETS,
    coefficients,
    field_hash,
    held_until,
    share_coefficients,
    share_threshold,
)
from messaging.ports import CapScreen
from messaging.store.schema import deliveries, subscriptions, supporters, suppressions
from messaging.store.sql.dialect import SqlDialect


class Audience:
    """The SQL shape of one blast's audience: topic subscribers (or test recipients) ∩ filter."""

    def __init__(self, alert: Alert, topic: str, dialect: SqlDialect) -> None:
        self.alert = alert
        if alert.test_recipients:
            # A test send goes to the named supporters wherever they subscribe; consent and
            # suppression still apply below.
            phones = [v for v in alert.test_recipients if "@" not in v]
            emails = [v.lower() for v in alert.test_recipients if "@" in v]
            self.key: Any = supporters.c.id
            self.source: Any = supporters
            self.where: list[ColumnElement[bool]] = [
                or_(supporters.c.phone.in_(phones), func.lower(supporters.c.email).in_(emails))
            ]
        else:
            self.key = subscriptions.c.supporter_id
            self.source = subscriptions.join(
                supporters, supporters.c.id == subscriptions.c.supporter_id
            )
            self.where = [subscriptions.c.topic == topic]
        #: The key on both sides of the join: the next page's lower bound is stated on both,
        #: because PostgreSQL does not carry a range across an equality join. With it on one
        #: side only, finding the page after the 500,000th subscriber merge-joined the
        #: supporters index from its start (50 ms a page: quadratic over a blast, 8 s of 38
        #: for a million).
        self._keys: tuple[Any, ...] = (
            (self.key,) if self.key is supporters.c.id else (self.key, supporters.c.id)
        )
        #: Where the page bounds are found: a whole topic's pages are its subscriptions
        #: alone (an index-only range of their primary key; each has its supporter, the
        #: foreign key cascades), a filtered audience's need the supporters too.
        self._bounds_from: tuple[Any, list[ColumnElement[bool]], tuple[Any, ...]] = (
            (subscriptions, list(self.where), (self.key,))
            if self.key is subscriptions.c.supporter_id and alert.audience is None
            else (self.source, self.where, self._keys)
        )
        if alert.audience is not None:
            self.where += audience_filter(alert.audience, dialect)

    def between(self, after: int, upto: int | None = None) -> list[ColumnElement[bool]]:
        """The page ``(after, upto]`` stated on both sides of the join (see ``_keys``)."""
        bounds = [key > after for key in self._keys]
        if upto is not None:
            bounds += [key <= upto for key in self._keys]
        return bounds

    def page_upper_bound(
        self, conn: Connection, after: int, page_size: int
    ) -> tuple[int, bool] | None:
        """The highest key of the next page after ``after`` and whether the audience ends in
        that page (it is short of ``page_size``), or None when the audience is done."""
        source, where, keys = self._bounds_from
        page = (
            select(self.key.label("key"))
            .select_from(source)
            .where(*where, *(key > after for key in keys))
            .order_by(self.key)
            .limit(page_size)
            .subquery()
        )
        upto, n = conn.execute(select(func.max(page.c.key), func.count())).one()
        return (int(upto), n < page_size) if upto is not None else None

    def stats(self, conn: Connection) -> dict[str, Any]:
        """How the audience divides per channel: eligible, without consent, without address."""

        def n(cond: ColumnElement[bool]) -> Any:
            return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

        cols = [func.count()]
        for channel in ("sms", "email"):
            opt_in, address = _consent_columns(channel)
            cols += [
                n(and_(opt_in.is_(True), address.is_not(None))),
                n(opt_in.is_(False)),
                n(and_(opt_in.is_(True), address.is_(None))),
            ]
        row = conn.execute(select(*cols).select_from(self.source).where(*self.where)).one()
        result: dict[str, Any] = {"audience": int(row[0])}
        for i, channel in enumerate(("sms", "email")):
            if channel in self.alert.channels:
                result[channel] = {
                    "eligible": int(row[1 + 3 * i]),
                    "no_consent": int(row[2 + 3 * i]),
                    "no_address": int(row[3 + 3 * i]),
                }
        return result


def _has_tag(tag: str) -> ColumnElement[bool]:
    # Tags are stored as ";a;b;". Whole-tag match with LIKE's wildcards escaped: a tag is a
    # name, never a pattern (``no_sms`` must not match ``noxsms``, ``%`` must not match
    # everyone). NULL tags hold no tag (and must not make ``NOT LIKE`` unknown).
    return func.coalesce(supporters.c.tags, "").contains(f";{tag};", autoescape=True)


#: Ledger states of a recipient an earlier blast reached (``from_blast``).
REACHED: tuple[str, ...] = (RowState.SENT, RowState.DELIVERED)
#: Every channel a ledger row may be on.
CHANNELS: tuple[str, ...] = ("sms", "email")


def audience_filter(audience: AudienceFilter, dialect: SqlDialect) -> list[ColumnElement[bool]]:
    """The alert's ``audience`` as conditions on ``supporters`` (all must hold), for the
    ``WHERE`` of the page and stats queries; ``audience.from_blast`` reads the ledger."""
    where: list[ColumnElement[bool]] = []
    if audience.postal_codes:
        where.append(supporters.c.postal_code.in_(audience.postal_codes))
    if audience.states:
        where.append(supporters.c.state.in_(audience.states))
    for any_of in (audience.tags, audience.tags_any):
        if any_of:
            where.append(or_(*(_has_tag(t) for t in any_of)))
    where += [_has_tag(t) for t in audience.tags_all]
    where += [~_has_tag(t) for t in audience.tags_none]
    # JSONB containment on PostgreSQL (the GIN index), json_extract on SQLite.
    where += [
        dialect.json_field_in(supporters.c.fields, name, values)
        for name, values in audience.fields.items()
    ]
    if audience.from_blast is not None:
        earlier = audience.from_blast
        where.append(_reached_by(earlier.id, clicked=earlier.clicked or None))
        if earlier.clicked is False:
            where.append(~_reached_by(earlier.id, clicked=True))
    return where


def _reached_by(blast_id: str, *, clicked: bool | None) -> ColumnElement[bool]:
    """The supporter has a row of ``blast_id`` that reached them (and was clicked).

    A correlated EXISTS naming both channels: each candidate of a page is two probes of the
    ledger's primary key (blast, channel, supporter), where ``IN (SELECT …)`` would read the
    earlier blast's every row once per expansion page.
    """
    d = deliveries.alias("earlier")
    conditions = [
        d.c.blast_id == blast_id,
        d.c.channel.in_(CHANNELS),
        d.c.supporter_id == supporters.c.id,
        d.c.state.in_(REACHED),
    ]
    if clicked:
        conditions.append(d.c.clicked_at.is_not(None))
    return exists().where(*conditions)


def _consent_columns(channel: str) -> tuple[Any, Any]:
    if channel == "sms":
        return supporters.c.sms_opt_in, supporters.c.phone
    return supporters.c.email_opt_in, supporters.c.email


def _destination(channel: str) -> Any:
    # Emails are compared whole and lower-cased: Jane@ and jane@ are one mailbox, one message.
    return supporters.c.phone if channel == "sms" else func.lower(supporters.c.email)


def _variant(alert: Alert, supporter_id: Any) -> Any:
    """The row's A/B variant (messaging/content/variants.py), computed in the INSERT; NULL without,
    and for a row held for a ``pick_winner`` winner (set when it is picked)."""
    if not alert.variants:
        return null()
    variant = field_hash(coefficients(alert.alert_id), supporter_id) % len(alert.variants)
    if alert.pick_winner is None:
        return variant
    return case((_held(alert, supporter_id), null()), else_=variant)


def _held(alert: Alert, supporter_id: Any) -> Any:
    """True for a recipient outside a ``pick_winner`` test share (messaging/content/variants.py)."""
    if alert.pick_winner is None:
        return false()
    bucket = field_hash(share_coefficients(alert.alert_id), supporter_id) % SHARE_BUCKETS
    return bucket >= share_threshold(alert.pick_winner.share)


#: The ledger columns an expansion page writes, in the order its SELECTs list them.
_PAGE_COLUMNS = (
    "blast_id",
    "channel",
    "supporter_id",
    "destination",
    "state",
    "created_at",
    "updated_at",
    "variant",
    "deferred_until",
)


def insert_page(
    conn: Connection,
    dialect: SqlDialect,
    blast_id: str,
    channel: str,
    audience: Audience,
    after: int,
    upto: int,
    capped: CapScreen | None = None,
) -> dict[str, list[int]]:
    """The INSERT … SELECT of one page and channel; returns the supporter ids written, by
    state (each list ascending on PostgreSQL).

    Household duplicates (a destination already live in this blast, or an earlier
    supporter in this page with the same destination) are written as ``duplicate``;
    suppressed destinations as ``suppressed``; the pending rows ``capped`` names (over
    their frequency cap) as ``capped``, in the same transaction. A re-run of the same page
    writes nothing.
    """
    dialect.begin_expansion(conn)
    if dialect.name == "postgresql":
        by_state = _write_page_postgres(conn, blast_id, channel, audience, after, upto)
    else:
        by_state = _write_page_ranked(conn, dialect, blast_id, channel, audience, after, upto)
    over = capped(channel, by_state.get(RowState.PENDING, [])) if capped else set()
    if over:
        conn.execute(
            deliveries.update()
            .where(
                deliveries.c.blast_id == blast_id,
                deliveries.c.channel == channel,
                dialect.among(deliveries.c.supporter_id, sorted(over)),
            )
            .values(state=RowState.CAPPED)
        )
        by_state[RowState.PENDING] = [i for i in by_state[RowState.PENDING] if i not in over]
        by_state[RowState.CAPPED] = sorted(over)
    return by_state


def _page_rows(audience: Audience, channel: str, after: int, upto: int, *, ranked: bool) -> Any:
    """The page's consenting, addressed recipients of ``channel``: supporter id,
    destination, whether it is suppressed (and, ``ranked``, its rank in its household)."""
    opt_in, address = _consent_columns(channel)
    destination = _destination(channel)
    sup = suppressions.alias("sp")
    columns = [
        audience.key.label("supporter_id"),
        destination.label("destination"),
        (sup.c.value.is_not(None)).label("suppressed"),
    ]
    if ranked:
        rank = func.row_number().over(partition_by=destination, order_by=audience.key)
        columns.append(rank.label("rn"))
    return (
        select(*columns)
        .select_from(
            audience.source.outerjoin(
                sup, and_(sup.c.channel == channel, sup.c.value == destination)
            )
        )
        .where(*audience.where, *audience.between(after, upto))
        .where(opt_in.is_(True), address.is_not(None))
        .cte("page")
    )


def _write_page_postgres(
    conn: Connection, blast_id: str, channel: str, audience: Audience, after: int, upto: int
) -> dict[str, list[int]]:
    """One statement: the page's rows in supporter order, the unique destination index
    deciding households, then the rows it turned away written as ``duplicate``.

    ``ON CONFLICT (destination index) DO NOTHING`` skips a row whose destination is already
    live in this blast, whether an earlier page wrote it or an earlier supporter of this
    very statement did (rows are inserted in the ``ORDER BY``, so the lowest id of a
    household wins, as the ranked statement decides). That is the probe the unique index
    makes anyway: no window sort of the page by destination, no LATERAL probe per row (15 %
    of a page). Only that index arbitrates: also pre-checking the primary key made the
    insert a third slower than a plain one, 6 % with this index alone.

    The turned-away rows (few, often none: a one-time filter skips the anti-join) go in as
    ``duplicate``, outside that index; their ``DO NOTHING`` on the primary key is what makes
    a re-run of a written page write nothing (its rows all meet their own destinations
    first). A re-run only happens when two expanders share a cursor; if a supporter's
    destination changed in between, the re-run fails on the primary key and rolls back,
    and its retry resumes after the cursor the other one committed.

    The written ids come back as one array per state rather than a row each.
    """
    # Past the JIT threshold on a page of 20,000, and compiling took longer (~25 ms) than
    # the few expressions it speeds up.
    conn.exec_driver_sql("SET LOCAL jit = off")
    page = _page_rows(audience, channel, after, upto, ranked=False)
    now = datetime.now(UTC)
    held = _held(audience.alert, page.c.supporter_id)
    state = case(
        (page.c.suppressed == true(), literal(RowState.SUPPRESSED)),
        (held, literal(RowState.DEFERRED)),
        else_=literal(RowState.PENDING),
    )
    variant = _variant(audience.alert, page.c.supporter_id)

    def rows(row_state: Any, deferred_until: Any) -> Any:
        """The page's ledger rows in ``_PAGE_COLUMNS`` order, in this state."""
        return select(
            literal(blast_id),
            literal(channel),
            page.c.supporter_id,
            page.c.destination,
            row_state,
            literal(now),
            literal(now),
            variant,
            deferred_until,
        )

    deferred_until = case(
        (state == literal(RowState.DEFERRED), literal(held_until(now))), else_=null()
    )
    first = (
        postgresql.insert(deliveries)
        .from_select(_PAGE_COLUMNS, rows(state, deferred_until).order_by(page.c.supporter_id))
        .on_conflict_do_nothing(
            index_elements=["blast_id", "channel", "destination"],
            # Written out, not bound: a generic plan (psycopg prepares a statement at its
            # 5th execution, PostgreSQL plans it generically some executions later) must
            # still prove the index's predicate, or the statement fails.
            index_where=deliveries.c.state != literal_column(f"'{RowState.DUPLICATE}'"),
        )
        .returning(deliveries.c.supporter_id, deliveries.c.state)
        .cte("written")
    )
    turned_away = ~exists().where(first.c.supporter_id == page.c.supporter_id)
    # Most pages turn nobody away: comparing the counts first (once, a one-time filter)
    # skips the anti-join (~20 ms a page of 20,000) when the write took every row.
    some_turned_away = (
        select(func.count()).select_from(first).scalar_subquery()
        < select(func.count()).select_from(page).scalar_subquery()
    )
    duplicates = (
        postgresql.insert(deliveries)
        .from_select(
            _PAGE_COLUMNS,
            rows(literal(RowState.DUPLICATE), null()).where(some_turned_away, turned_away),
        )
        .on_conflict_do_nothing()
        .returning(deliveries.c.supporter_id, deliveries.c.state)
        .cte("duplicates")
    )
    written = union_all(
        select(first.c.supporter_id, first.c.state),
        select(duplicates.c.supporter_id, duplicates.c.state),
    ).subquery("rows")
    ids = aggregate_order_by(written.c.supporter_id, written.c.supporter_id)
    by_state = select(written.c.state, func.array_agg(ids)).group_by(written.c.state)
    return {str(st): [int(i) for i in ids] for st, ids in conn.execute(by_state)}


def _write_page_ranked(
    conn: Connection,
    dialect: SqlDialect,
    blast_id: str,
    channel: str,
    audience: Audience,
    after: int,
    upto: int,
) -> dict[str, list[int]]:
    """One INSERT … SELECT deciding households by rank: the first of a destination in this
    page writes it, unless the blast already has it live (a probe per row)."""
    page = _page_rows(audience, channel, after, upto, ranked=True)
    live_match = and_(
        deliveries.c.blast_id == blast_id,
        deliveries.c.channel == channel,
        deliveries.c.destination == page.c.destination,
        deliveries.c.state != RowState.DUPLICATE,
    )
    source, live_elsewhere = dialect.expansion_join(page, live_match)
    now = datetime.now(UTC)
    state = case(
        (or_(page.c.rn > 1, live_elsewhere), literal(RowState.DUPLICATE)),
        (page.c.suppressed == true(), literal(RowState.SUPPRESSED)),
        (_held(audience.alert, page.c.supporter_id), literal(RowState.DEFERRED)),
        else_=literal(RowState.PENDING),
    )
    rows = (
        select(
            literal(blast_id),
            literal(channel),
            page.c.supporter_id,
            page.c.destination,
            state,
            literal(now),
            literal(now),
            _variant(audience.alert, page.c.supporter_id),
            case((state == literal(RowState.DEFERRED), literal(held_until(now))), else_=null()),
        )
        .select_from(source)
        .where(true())
    )  # SQLite needs a WHERE before ON CONFLICT
    stmt = (
        dialect.insert(deliveries)
        .from_select(_PAGE_COLUMNS, rows)
        .on_conflict_do_nothing()
        .returning(deliveries.c.supporter_id, deliveries.c.state)
    )
    by_state: dict[str, list[int]] = {}
    for sid, st in conn.execute(stmt):
        by_state.setdefault(str(st), []).append(int(sid))
    return by_state
