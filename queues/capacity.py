"""The worker group's scaling signal: instances the backlog requires, per channel.

Scaling on backlog ÷ instances drove the group to its maximum for any blast over 30,000
recipients, though the provider caps SMS throughput and one instance already sends faster
than a 10DLC brand may: the extra instances only waited on the limiter and retried. So the
scheduler publishes, per channel, ``min(backlog / drain target, provider rate) / one
instance's rate`` (``config.sizing``), and the group's target tracking keeps
``RequiredInstances ÷ GroupInServiceInstances`` at 1. An email weighs 1/8 of an SMS there,
as it does on an instance's CPU.

Published with the backlog and outcome gauges in the same ``PutMetricData`` request by the
scheduler's leader (``queues/leader.py``), every minute. Its absence means the scheduler is
dead: the template's alarm treats missing data as breaching.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from config import sizing
from messaging.ports import ReportStore
from queues.backlog import (
    CHANNELS,
    DIM_CHANNEL,
    DIM_PREFIX,
    NAMESPACE,
    BacklogPublisher,
    Lane,
    compute_backlog,
    compute_outcomes,
)

log = structlog.get_logger(__name__)

#: Worker instances the sendable backlog requires, a gauge (fractional). Dimensions:
#: (Prefix, Channel) and (Prefix) — the sum, which the worker group's policy tracks.
REQUIRED_INSTANCES = "RequiredInstances"


def required_by_channel(
    backlog: Mapping[Lane, int], provider_rates: Mapping[str, float]
) -> dict[str, float]:
    """``{channel: instances}`` for every channel, from the per-lane backlog."""
    per_channel = dict.fromkeys(CHANNELS, 0)
    for (channel, _priority), n in backlog.items():
        per_channel[channel] = per_channel.get(channel, 0) + n
    return {
        channel: sizing.required_instances(n, provider_rates[channel], channel)
        for channel, n in per_channel.items()
    }


def capacity_metric_data(
    required: Mapping[str, float], prefix: str, *, at: datetime | None = None
) -> list[dict[str, Any]]:
    """The ``RequiredInstances`` data: one per channel and the total."""
    timestamp = at or datetime.now(UTC)

    def datum(value: float, **dims: str) -> dict[str, Any]:
        dimensions = [{"Name": DIM_PREFIX, "Value": prefix}]
        dimensions += [{"Name": k, "Value": v} for k, v in dims.items()]
        return {
            "MetricName": REQUIRED_INSTANCES,
            "Dimensions": dimensions,
            "Timestamp": timestamp,
            "Value": round(value, 6),
            "Unit": "None",
        }

    data = [datum(required[c], **{DIM_CHANNEL: c}) for c in sorted(required)]
    data.append(datum(sum(required.values())))
    return data


def publish_metrics(
    reports: ReportStore,
    cloudwatch: Any,
    prefix: str,
    provider_rates: Mapping[str, float],
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    """Backlog, outcomes and required instances, in one ``PutMetricData``: what the
    scheduler's leader calls every minute. Returns a JSON-ready summary for its log line.

    ``provider_rates``: ``{"sms": SMS_RATE_ACCOUNT, "email": EMAIL_RATE}``. Errors propagate
    (the scheduler logs them and tries at its next tick).
    """
    backlog = compute_backlog(reports)
    outcomes = compute_outcomes(reports)
    required = required_by_channel(backlog, provider_rates)
    data = BacklogPublisher(cloudwatch, namespace, prefix).metric_data(backlog, outcomes)
    data += capacity_metric_data(required, prefix)
    cloudwatch.put_metric_data(Namespace=namespace, MetricData=data)
    summary = {
        "backlog_total": sum(backlog.values()),
        "required_instances": {c: round(v, 3) for c, v in required.items()},
    }
    log.debug("capacity.published", namespace=namespace, **summary)
    return summary
