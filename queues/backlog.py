"""The fleet's CloudWatch metrics: the backlog the worker group scales on, and the outcome
counts its alarms watch.

``rapid scheduler`` calls :func:`publish_backlog` every 60 s. The metric names, dimensions
and namespace below are the ones ``deploy/cloudformation/rapid-response.yaml`` scales and
alarms on; change them together (``tests/test_deploy.py`` checks that they agree).

What drives scaling is the *sendable* backlog: ledger rows in ``pending`` or ``sending`` of
blasts that are ``expanding`` or ``sending``. Rows ``deferred`` by quiet hours wait for the
morning whatever the fleet size, and rows of a paused blast wait for an operator, so neither
may scale the fleet out (they would only buy idle instances for the night).

Every value is computed from the system of record, so several schedulers publishing at once
publish the same numbers; the template reads them with the ``Average``/``Maximum``
statistic, which duplicates do not change. Every lane is published even when it is empty: a
target-tracking policy that stops receiving data never scales in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.ports import PRIORITIES, ReportStore

log = structlog.get_logger(__name__)

#: The CloudWatch namespace of every metric the fleet publishes.
NAMESPACE = "RapidResponse"

#: Recipients still to be handed to a provider (``pending`` + ``sending``), a gauge.
#: Dimensions: (Prefix, Channel, Priority) per lane, (Prefix, Channel), and (Prefix) — the
#: fleet total the worker group's target tracking divides by its in-service instances.
BACKLOG = "Backlog"
#: Recipients of live blasts the provider was asked to take (``sent``, ``delivered``,
#: ``failed``), a gauge. Dimensions: (Prefix, Channel).
ATTEMPTED = "Attempted"
#: Recipients of live blasts that ended ``failed`` (refused, undelivered, lost in flight), a
#: gauge. Dimensions: (Prefix, Channel). Failure rate = Failed / Attempted.
FAILED = "Failed"
#: SMS of live blasts that carriers filtered, a gauge. Dimensions: (Prefix, Channel=sms).
#: Filtering rate = CarrierFiltered / Attempted(sms).
CARRIER_FILTERED = "CarrierFiltered"

#: Dimension names.
DIM_PREFIX = "Prefix"
DIM_CHANNEL = "Channel"
DIM_PRIORITY = "Priority"

CHANNELS = ("sms", "email")
#: Ledger states that are work the fleet can do now (``deferred`` is not: it waits for the
#: end of quiet hours, and more instances would not send it sooner).
BACKLOG_STATES = (RowState.PENDING, RowState.SENDING)
#: Ledger states of recipients handed to the provider (``delivered``/``failed`` refine
#: ``sent``; ``failed`` also holds refusals at send time).
ATTEMPTED_STATES = (RowState.SENT, RowState.DELIVERED, RowState.FAILED)
#: Blasts whose rows are being sent. Paused blasts are left out on purpose: their rows wait
#: for an operator, not for capacity.
LIVE_BLAST_STATUSES = (BlastStatus.EXPANDING, BlastStatus.SENDING)
#: Twilio error codes that mean a carrier filtered the message rather than the number being
#: bad: 30007 (carrier violation / content filtered) and 30034 (message from an unregistered
#: 10DLC number, blocked by the carriers). A spike means the content or the sender
#: registration is being blocked, and sending the rest of the blast only makes it worse.
CARRIER_FILTERED_CODES = ("30007", "30034")

#: A lane of the send queue: (channel, priority).
Lane = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Outcome counts of the live blasts, per channel, as the alarms read them."""

    attempted: Mapping[str, int] = field(default_factory=dict)
    failed: Mapping[str, int] = field(default_factory=dict)
    carrier_filtered: int = 0


def compute_backlog(reports: ReportStore) -> dict[Lane, int]:
    """Sendable recipients per lane: ``{(channel, priority): rows}``, every lane present.

    One grouped query; the ledger's ``(blast_id, channel, state)`` index answers it per live
    blast, so its cost follows the live backlog, not the ledger's size.
    """
    backlog: dict[Lane, int] = {(c, p): 0 for c in CHANNELS for p in PRIORITIES}
    for key, n in reports.lane_backlog(LIVE_BLAST_STATUSES, CHANNELS, BACKLOG_STATES).items():
        backlog[key] = backlog.get(key, 0) + n
    return backlog


def compute_outcomes(reports: ReportStore) -> Outcomes:
    """Attempted, failed and carrier-filtered recipients of the live blasts."""
    rows, carrier_filtered = reports.live_outcomes(
        LIVE_BLAST_STATUSES, CHANNELS, ATTEMPTED_STATES, CARRIER_FILTERED_CODES
    )
    attempted = dict.fromkeys(CHANNELS, 0)
    failed = dict.fromkeys(CHANNELS, 0)
    for (channel, state), n in rows.items():
        attempted[channel] = attempted.get(channel, 0) + n
        if state == RowState.FAILED:
            failed[channel] = failed.get(channel, 0) + n
    return Outcomes(attempted=attempted, failed=failed, carrier_filtered=carrier_filtered)


class BacklogPublisher:
    """Sends the backlog (and outcomes) to CloudWatch in one ``PutMetricData`` call.

    The boto3 CloudWatch client is injected; nothing is built or sent at import.
    """

    __slots__ = ("_cloudwatch", "_namespace", "_prefix")

    def __init__(self, cloudwatch_client: Any, namespace: str, prefix: str) -> None:
        self._cloudwatch = cloudwatch_client
        self._namespace = namespace
        self._prefix = prefix

    def metric_data(
        self,
        backlog: Mapping[Lane, int],
        outcomes: Outcomes | None = None,
        *,
        at: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The ``MetricData`` entries of one publication: 14, one request (the old API limit
        was 20 per request, the current one 1,000)."""
        timestamp = at or datetime.now(UTC)

        def datum(name: str, value: int, **dims: str) -> dict[str, Any]:
            dimensions = [{"Name": DIM_PREFIX, "Value": self._prefix}]
            dimensions += [{"Name": k, "Value": v} for k, v in dims.items()]
            return {
                "MetricName": name,
                "Dimensions": dimensions,
                "Timestamp": timestamp,
                "Value": float(value),
                "Unit": "Count",
            }

        data = [
            datum(BACKLOG, n, **{DIM_CHANNEL: channel, DIM_PRIORITY: priority})
            for (channel, priority), n in sorted(backlog.items())
        ]
        per_channel = dict.fromkeys(CHANNELS, 0)
        for (channel, _priority), n in backlog.items():
            per_channel[channel] = per_channel.get(channel, 0) + n
        data += [datum(BACKLOG, n, **{DIM_CHANNEL: c}) for c, n in sorted(per_channel.items())]
        data.append(datum(BACKLOG, sum(per_channel.values())))
        if outcomes is not None:
            for channel in CHANNELS:
                by_channel = {DIM_CHANNEL: channel}
                data.append(datum(ATTEMPTED, outcomes.attempted.get(channel, 0), **by_channel))
                data.append(datum(FAILED, outcomes.failed.get(channel, 0), **by_channel))
            data.append(datum(CARRIER_FILTERED, outcomes.carrier_filtered, **{DIM_CHANNEL: "sms"}))
        return data

    def publish(
        self, backlog: Mapping[Lane, int], outcomes: Outcomes | None = None
    ) -> list[dict[str, Any]]:
        """Send one batched ``put_metric_data``; returns the data sent."""
        data = self.metric_data(backlog, outcomes)
        self._cloudwatch.put_metric_data(Namespace=self._namespace, MetricData=data)
        return data


def publish_backlog(
    reports: ReportStore, cloudwatch: Any, prefix: str, namespace: str = NAMESPACE
) -> dict[str, Any]:
    """Compute the backlog and outcomes from the ledger and publish them; what the scheduler
    calls every 60 s. Returns a JSON-ready summary for its log line::

        {"backlog": {"sms/urgent": 0, …}, "backlog_total": 0,
         "attempted": {"sms": 0, "email": 0}, "failed": {…}, "carrier_filtered": 0}

    Database and CloudWatch errors propagate: the scheduler logs them and tries again at its
    next tick (a missed minute only delays scaling by a minute).
    """
    backlog = compute_backlog(reports)
    outcomes = compute_outcomes(reports)
    BacklogPublisher(cloudwatch, namespace, prefix).publish(backlog, outcomes)
    summary = {
        "backlog": {f"{c}/{p}": n for (c, p), n in sorted(backlog.items())},
        "backlog_total": sum(backlog.values()),
        "attempted": dict(outcomes.attempted),
        "failed": dict(outcomes.failed),
        "carrier_filtered": outcomes.carrier_filtered,
    }
    log.debug("backlog.published", namespace=namespace, total=summary["backlog_total"])
    return summary
