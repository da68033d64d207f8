"""Fleet metrics: counters senders bump in Redis, and the Prometheus view ``rapid web`` serves.

Senders run in many processes on many machines, so an in-process ``prometheus_client``
counter would only ever see one of them. Instead every sender adds to one Redis hash per
metric family (``HINCRBY``/``HINCRBYFLOAT``, pipelined, one round trip per call) and the web
process turns those hashes into counters at scrape time. Gauges (ledger states, blasts, queue
depths) are read from the system of record and Redis at scrape time as well, so a scrape
always shows the fleet as it is now, whichever web process answers.

Recording is best effort: a metric that cannot be written is logged and dropped, never
allowed to fail a send.

The sender-side API::

    record_outcomes(redis, names, "sms", {"sent": 98, "failed": 2})
    record_provider_call(redis, names, "twilio", latency_s=0.182, ok=True)
    record_retry(redis, names, "sendgrid")
    record_limiter_wait(redis, names, "sms-sender", wait_s=0.35)
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
    SummaryMetricFamily,
)
from sqlalchemy import Engine, func, select

from messaging import states
from messaging.store.schema import blasts, deliveries
from queues.lanes import lane_name
from queues.names import Names
from queues.sendqueue import PRIORITIES

log = structlog.get_logger(__name__)

#: Redis hash per metric family, under ``names.redis_key("metrics", FAMILY)``.
MESSAGES = "messages"
PROVIDER_REQUESTS = "provider_requests"
PROVIDER_LATENCY = "provider_latency"
PROVIDER_RETRIES = "provider_retries"
LIMITER_WAIT = "limiter_wait"
FAMILIES = (MESSAGES, PROVIDER_REQUESTS, PROVIDER_LATENCY, PROVIDER_RETRIES, LIMITER_WAIT)

#: Joins label values into one hash field; label values are our own words, never ``|``.
_SEP = "|"
#: Every ledger state, so ``rapid_deliveries`` series exist (at 0) before the first row.
LEDGER_STATES = (
    states.PENDING,
    states.SENDING,
    states.SENT,
    states.DELIVERED,
    states.FAILED,
    states.SUPPRESSED,
    states.DUPLICATE,
    states.DEFERRED,
    states.EXPIRED,
    states.CANCELED,
)
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


def record_provider_call(
    redis: Any, names: Names, provider: str, latency_s: float, ok: bool
) -> None:
    """Count one provider HTTP call and its latency in seconds.

    Exported as ``rapid_provider_requests_total{provider, ok}`` and
    ``rapid_provider_latency_seconds_sum`` / ``_count{provider}``.
    """
    pipe = redis.pipeline(transaction=False)
    pipe.hincrby(metric_key(names, PROVIDER_REQUESTS), _field(provider, str(bool(ok)).lower()), 1)
    latency = metric_key(names, PROVIDER_LATENCY)
    pipe.hincrbyfloat(latency, _field(provider, "sum"), max(0.0, float(latency_s)))
    pipe.hincrby(latency, _field(provider, "count"), 1)
    _execute(pipe, PROVIDER_REQUESTS)


def record_retry(redis: Any, names: Names, provider: str, n: int = 1) -> None:
    """Count ``n`` retried provider calls.

    Exported as ``rapid_provider_retries_total{provider}``.
    """
    if n <= 0:
        return
    pipe = redis.pipeline(transaction=False)
    pipe.hincrby(metric_key(names, PROVIDER_RETRIES), provider, int(n))
    _execute(pipe, PROVIDER_RETRIES)


def record_limiter_wait(redis: Any, names: Names, key_kind: str, wait_s: float) -> None:
    """Add one wait, in seconds, on a rate limit of kind ``key_kind`` (``sms-sender``, …).

    Exported as ``rapid_limiter_wait_seconds_sum`` / ``_count{kind}``.
    """
    pipe = redis.pipeline(transaction=False)
    key = metric_key(names, LIMITER_WAIT)
    pipe.hincrbyfloat(key, _field(key_kind, "sum"), max(0.0, float(wait_s)))
    pipe.hincrby(key, _field(key_kind, "count"), 1)
    _execute(pipe, LIMITER_WAIT)


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

    def __init__(self, engine: Engine, redis: Any, names: Names) -> None:
        self._engine = engine
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
        open_blasts = blasts.c.status.not_in(sorted(states.ENDED_STATUSES))
        by_state = (
            select(deliveries.c.channel, deliveries.c.state, func.count())
            .select_from(deliveries.join(blasts, blasts.c.blast_id == deliveries.c.blast_id))
            .where(open_blasts)
            .group_by(deliveries.c.channel, deliveries.c.state)
        )
        by_status = select(blasts.c.status, func.count()).group_by(blasts.c.status)
        with self._engine.connect() as conn:
            rows = {(str(c), str(s)): int(n) for c, s, n in conn.execute(by_state)}
            statuses = {str(s): int(n) for s, n in conn.execute(by_status)}

        ledger = GaugeMetricFamily(
            "rapid_deliveries",
            "Ledger rows of blasts that have not ended, per channel and state.",
            labels=["channel", "state"],
        )
        for channel in CHANNELS:
            for state in LEDGER_STATES:
                ledger.add_metric([channel, state], rows.pop((channel, state), 0))
        for (channel, state), n in sorted(rows.items()):  # a state we do not know yet
            ledger.add_metric([channel, state], n)

        blast_gauge = GaugeMetricFamily("rapid_blasts", "Blasts per status.", labels=["status"])
        for status in states.BLAST_STATUSES:
            blast_gauge.add_metric([status], statuses.pop(status, 0))
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

        requests = CounterMetricFamily(
            "rapid_provider_requests",
            "Provider API calls, by provider and whether they succeeded.",
            labels=["provider", "ok"],
        )
        for labels, value in sorted(data[PROVIDER_REQUESTS].items()):
            if len(labels) == 2:
                requests.add_metric(list(labels), value)

        latency = SummaryMetricFamily(
            "rapid_provider_latency_seconds",
            "Time spent in provider API calls.",
            labels=["provider"],
        )
        for provider, (count, total) in sorted(_sum_count(data[PROVIDER_LATENCY]).items()):
            latency.add_metric([provider], count_value=count, sum_value=total)

        retries = CounterMetricFamily(
            "rapid_provider_retries",
            "Provider API calls retried after a transient error.",
            labels=["provider"],
        )
        for labels, value in sorted(data[PROVIDER_RETRIES].items()):
            retries.add_metric([labels[0]], value)

        waits = SummaryMetricFamily(
            "rapid_limiter_wait_seconds",
            "Time senders waited on rate limits, by kind of limit.",
            labels=["kind"],
        )
        for kind, (count, total) in sorted(_sum_count(data[LIMITER_WAIT]).items()):
            waits.add_metric([kind], count_value=count, sum_value=total)

        return [queue, messages, requests, latency, retries, waits]


def _sum_count(values: dict[tuple[str, ...], float]) -> dict[str, tuple[int, float]]:
    """``{(label, "sum"): s, (label, "count"): c}`` → ``{label: (c, s)}``."""
    out: dict[str, tuple[int, float]] = {}
    for labels, value in values.items():
        if len(labels) != 2:
            continue
        count, total = out.get(labels[0], (0, 0.0))
        if labels[1] == "count":
            count = int(value)
        elif labels[1] == "sum":
            total = value
        out[labels[0]] = (count, total)
    return out


def build_registry(engine: Engine, redis: Any, names: Names) -> CollectorRegistry:
    """A registry of its own (never the global default) holding the fleet collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(engine, redis, names))
    return registry
