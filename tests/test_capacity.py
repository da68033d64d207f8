"""The worker group's scaling signal (``queues/capacity.py``): instances the backlog needs,
per channel, capped by the provider's rate, weighted by what each channel costs an instance.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from config import sizing
from messaging.store.sql.reports import SqlReportStore
from queues.backlog import NAMESPACE
from queues.capacity import (
    REQUIRED_INSTANCES,
    capacity_metric_data,
    publish_metrics,
    required_by_channel,
)
from tests.fleet import moto_client

RATES = {"sms": 225.0, "email": 1000.0}


def lanes(sms: int = 0, email: int = 0) -> dict[tuple[str, str], int]:
    backlog = {(c, p): 0 for c in ("sms", "email") for p in ("urgent", "normal", "bulk")}
    backlog[("sms", "urgent")] = sms
    backlog[("email", "bulk")] = email
    return backlog


def test_a_big_sms_blast_asks_for_what_the_provider_can_take_not_the_group_maximum() -> None:
    # Given a 1,000,000-SMS blast on a 225 MPS account: backlog / instances asked for the max
    required = required_by_channel(lanes(sms=1_000_000), RATES)
    # Then it asks for 225 / 500 = 0.45 of an instance: one instance sends it as fast as allowed
    assert required["sms"] == pytest.approx(225 / sizing.SMS_PER_INSTANCE_PER_S)
    assert math.ceil(sum(required.values())) == 1


def test_a_small_backlog_asks_for_its_drain_rate() -> None:
    # 30,000 SMS drained over the 300 s target is 100/s: a fifth of an instance
    required = required_by_channel(lanes(sms=30_000), RATES)
    assert required["sms"] == pytest.approx(30_000 / sizing.DRAIN_TARGET_S / 500)
    assert required["email"] == 0


def test_an_email_weighs_an_eighth_of_an_sms() -> None:
    sms = required_by_channel(lanes(sms=60_000), {"sms": 1e9, "email": 1e9})["sms"]
    email = required_by_channel(lanes(email=60_000), {"sms": 1e9, "email": 1e9})["email"]
    assert sms / email == pytest.approx(8.0)


def test_the_channels_add_up_to_the_group_maximum_at_full_provider_rates() -> None:
    # At both providers' limits the metric reaches exactly the cap the template derives
    rates = {"sms": 1000.0, "email": 10_000.0}
    required = required_by_channel(lanes(sms=10**9, email=10**9), rates)
    assert math.ceil(sum(required.values())) == sizing.worker_max_size(1000, 10_000) == 5


def test_metric_data_has_one_datum_per_channel_and_the_total() -> None:
    data = capacity_metric_data({"sms": 0.45, "email": 0.25}, "p1")
    by_dims = {tuple((d["Name"], d["Value"]) for d in x["Dimensions"]): x["Value"] for x in data}
    assert by_dims == {
        (("Prefix", "p1"), ("Channel", "email")): 0.25,
        (("Prefix", "p1"), ("Channel", "sms")): 0.45,
        (("Prefix", "p1"),): 0.7,
    }
    assert {d["MetricName"] for d in data} == {REQUIRED_INSTANCES}


@pytest.mark.integration
def test_publish_metrics_sends_backlog_and_capacity_in_one_request(
    engine: Engine, moto_url: str, prefix: str
) -> None:
    # Given an empty ledger and a CloudWatch (moto) endpoint
    cloudwatch = moto_client("cloudwatch", moto_url)
    # When the scheduler publishes
    summary = publish_metrics(SqlReportStore(engine), cloudwatch, prefix, RATES)
    # Then the total is there, at zero: silence is kept for a dead scheduler, not an idle one
    assert summary["required_instances"] == {"sms": 0.0, "email": 0.0}
    now = datetime.now(UTC)
    stats = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=REQUIRED_INSTANCES,
        Dimensions=[{"Name": "Prefix", "Value": prefix}],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["SampleCount", "Maximum"],
    )
    (point,) = stats["Datapoints"]  # moto matches dimension subsets: sums the three
    assert point["Maximum"] == 0.0
    listed = cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName=REQUIRED_INSTANCES)
    dims = {
        tuple(sorted(d["Name"] for d in m["Dimensions"]))
        for m in listed["Metrics"]
        if {"Name": "Prefix", "Value": prefix} in m["Dimensions"]
    }
    assert dims == {("Prefix",), ("Channel", "Prefix")}
    cloudwatch.close()
