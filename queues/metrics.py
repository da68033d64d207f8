"""Fleet metrics: counters senders bump in Redis, and the Prometheus view ``rapid web`` serves.

Senders run in many processes on many machines, so an in-process ``prometheus_client``
counter would only ever see one of them. Instead every sender adds to one Redis hash per
metric family (``HINCRBY``/``HINCRBYFLOAT``, pipelined, one round trip per call) and the web
process turns those hashes into counters at scrape time. Gauges (ledger states, blasts, queue
depths) are read from the system of record and Redis at scrape time as well, so a scrape
always shows the fleet as it is now, whichever web process answers.

Recording is best effort: a metric that cannot be written is logged and dropped, never
allowed to fail a send.

The sender-side API (wired as the senders' ``on_outcomes`` hook by ``workers/app.py``)::

    record_outcomes(redis, names, "sms", {"sent": 98, "failed": 2})

The ledger's share of the gauges comes from :meth:`messaging.ports.ReportStore.fleet_counts`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from config.names import Names
from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.ports import PRIORITIES, ReportStore
from queues.lanes import lane_name

log = structlog.get_logger(__name__)

#: Redis hash per metric family, under ``names.redis_key("metrics", FAMILY)``.
MESSAGES = "messages"
FAMILIES = (MESSAGES,)

#: Joins label values into one hash field; label values are our own words, never ``|``.
_SEP = "|"
#: Every ledger state, so ``rapid_deliveries`` series exist (at 0) before the first row.
LEDGER_STATES = tuple(RowState)
CHANNELS = ("sms", "email")


def metric_key(names: Names, family: str) -> str:
    """The Redis hash of one metric family."""
    return names.redis_key("metrics", family)


def _field(*labels: str) -> str:
    return _SEP.join(labels)


def _execute(pipe: Any, what: str) -> None:
    import redis.exceptions

    try:
        pipe.execute()
    except redis.exceptions.RedisError as exc:
        # A lost increment is cheaper than a failed send: note it and carry on.
        log.warning("metrics.record_failed", metric=what, error_type=type(exc).__name__)


def record_outcomes(redis: Any, names: Names, channel: str, counts: Mapping[str, int]) -> None:
    """Add one batch's outcomes of ``channel``, e.g. ``{"sent": 98, "failed": 2}``.

    Exported as ``rapid_messages_total{channel, outcome}``. Zero counts are skipped.
    """
    pipe = redis.pipeline(transaction=False)
    key = metric_key(names, MESSAGES)
    added = False
    for outcome, n in counts.items():
        if n:
            pipe.hincrby(key, _field(channel, outcome), int(n))
            added = True
    if added:
        _execute(pipe, MESSAGES)


def send_lanes() -> list[str]:
    """Every dramatiq queue of the send lanes, ready and delayed (``.DQ``)."""
    lanes = [lane_name(c, p) for c in CHANNELS for p in PRIORITIES]
    return [name for lane in lanes for name in (lane, f"{lane}.DQ")]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(raw: Mapping[Any, Any]) -> dict[tuple[str, ...], float]:
    return {tuple(_text(k).split(_SEP)): float(_text(v)) for k, v in raw.items()}


class FleetCollector:
    """A Prometheus collector that reads the fleet's state when scraped.

    A source that does not answer (database or Redis) costs its own families only; the
    others are still exported, and ``rapid_metrics_source_up{source}`` says which failed.
    """

    def __init__(self, reports: ReportStore, redis: Any, names: Names) -> None:
        self._reports = reports
        self._redis = redis
        self._names = names

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not touch the database or Redis."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family, computed now."""
        up = GaugeMetricFamily(
            "rapid_metrics_source_up",
            "1 if the source of some metrics answered this scrape, else 0.",
            labels=["source"],
        )
        try:
            db_families = self._database_families()
            up.add_metric(["database"], 1)
        except Exception as exc:  # a scrape must not fail because one source is down
            log.warning("metrics.database_failed", error_type=type(exc).__name__)
            db_families = []
            up.add_metric(["database"], 0)
        try:
            redis_families = self._redis_families()
            up.add_metric(["redis"], 1)
        except Exception as exc:
            log.warning("metrics.redis_failed", error_type=type(exc).__name__)
            redis_families = []
            up.add_metric(["redis"], 0)
        yield from db_families
        yield from redis_families
        yield up

    # --- the system of record ------------------------------------------------------------

    def _database_families(self) -> list[Metric]:
        counts = self._reports.fleet_counts()
        rows, statuses = dict(counts.open_rows), dict(counts.blasts)

        ledger = GaugeMetricFamily(
            "rapid_deliveries",
            "Ledger rows of blasts that have not ended, per channel and state.",
            labels=["channel", "state"],
        )
        for channel in CHANNELS:
            for known in LEDGER_STATES:
                ledger.add_metric([channel, known], rows.pop((channel, known), 0))
        for (channel, state), n in sorted(rows.items()):  # a state we do not know yet
            ledger.add_metric([channel, state], n)

        blast_gauge = GaugeMetricFamily("rapid_blasts", "Blasts per status.", labels=["status"])
        for known_status in BlastStatus:
            blast_gauge.add_metric([known_status], statuses.pop(known_status, 0))
        for status, n in sorted(statuses.items()):
            blast_gauge.add_metric([status], n)
        return [ledger, blast_gauge]

    # --- Redis -----------------------------------------------------------------------------

    def _redis_families(self) -> list[Metric]:
        lanes = send_lanes()
        namespace = f"{self._names.prefix}-dramatiq"
        pipe = self._redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.llen(f"{namespace}:{lane}")
        for family in FAMILIES:
            pipe.hgetall(metric_key(self._names, family))
        results = pipe.execute()
        depths, hashes = results[: len(lanes)], results[len(lanes) :]
        data = dict(zip(FAMILIES, (_pairs(h) for h in hashes), strict=True))

        queue = GaugeMetricFamily(
            "rapid_send_queue_depth",
            "Messages waiting in each send lane (``.DQ``: delayed, e.g. quiet hours).",
            labels=["lane"],
        )
        for lane, depth in zip(lanes, depths, strict=True):
            queue.add_metric([lane], int(depth))

        messages = CounterMetricFamily(
            "rapid_messages",
            "Recipients per channel and outcome, as recorded by the senders.",
            labels=["channel", "outcome"],
        )
        for labels, value in sorted(data[MESSAGES].items()):
            if len(labels) == 2:
                messages.add_metric(list(labels), value)

        return [queue, messages]


def build_registry(reports: ReportStore, redis: Any, names: Names) -> CollectorRegistry:
    """A registry of its own (never the global default) holding the fleet collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(reports, redis, names))
    return registry
