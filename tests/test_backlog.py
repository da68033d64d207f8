"""The backlog the worker group scales on: computed from the ledger, published to CloudWatch.

``compute_backlog`` runs on a real database (SQLite and PostgreSQL); the publisher talks to a
real moto server over HTTP, and the values are read back with the CloudWatch read APIs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from sqlalchemy import Engine

from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.content.alert import parse_alert
from messaging.store.schema import deliveries
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.reports import SqlReportStore
from queues.backlog import (
    ATTEMPTED,
    BACKLOG,
    CARRIER_FILTERED,
    FAILED,
    NAMESPACE,
    BacklogPublisher,
    Outcomes,
    compute_backlog,
    compute_outcomes,
    publish_backlog,
)
from tests.fleet import moto_client

_ids = count(1)


def make_blast(engine: Engine, blast_id: str, priority: str, status: str) -> None:
    """A blast as the intake records it, moved to ``status``."""
    doc = {"alert_id": blast_id, "priority": priority, "sms": {"body": "Hi"}}
    store = SqlBlastStore(engine)
    store.create(parse_alert(json.dumps(doc), fallback_id="x"), "debate-night", None)
    if status != BlastStatus.EXPANDING:
        assert store.set_status(blast_id, status)


def add_rows(
    engine: Engine, blast_id: str, channel: str, state: str, n: int, error_code: str | None = None
) -> None:
    """``n`` ledger rows of one blast and channel in ``state``."""
    now = datetime.now(UTC)
    rows = []
    for _ in range(n):
        sid = next(_ids)
        rows.append(
            {
                "blast_id": blast_id,
                "channel": channel,
                "supporter_id": sid,
                "destination": f"+1415555{sid:04d}" if channel == "sms" else f"s{sid}@ex.am",
                "state": state,
                "error_code": error_code,
                "created_at": now,
                "updated_at": now,
            }
        )
    with engine.begin() as conn:
        conn.execute(deliveries.insert(), rows)


@pytest.fixture
def ledger(engine: Engine) -> Engine:
    """A ledger with blasts in every situation the backlog must tell apart."""
    # An urgent blast being sent: its pending and in-flight rows are backlog; deferred rows
    # (quiet hours) are not; sent, delivered and failed rows are outcomes.
    make_blast(engine, "urgent-1", "urgent", BlastStatus.SENDING)
    add_rows(engine, "urgent-1", "sms", RowState.PENDING, 30)
    add_rows(engine, "urgent-1", "sms", RowState.SENDING, 5)
    add_rows(engine, "urgent-1", "sms", RowState.DEFERRED, 40)
    add_rows(engine, "urgent-1", "sms", RowState.SENT, 50)
    add_rows(engine, "urgent-1", "sms", RowState.DELIVERED, 10)
    add_rows(engine, "urgent-1", "sms", RowState.FAILED, 3, error_code="30007")
    add_rows(engine, "urgent-1", "sms", RowState.FAILED, 1, error_code="30034")
    add_rows(engine, "urgent-1", "sms", RowState.FAILED, 2, error_code="21211")
    add_rows(engine, "urgent-1", "email", RowState.PENDING, 12)
    add_rows(engine, "urgent-1", "email", RowState.FAILED, 4, error_code="bounce")
    add_rows(engine, "urgent-1", "sms", RowState.DUPLICATE, 7)
    # A bulk blast still expanding: its rows written so far are backlog.
    make_blast(engine, "bulk-1", "bulk", BlastStatus.EXPANDING)
    add_rows(engine, "bulk-1", "email", RowState.PENDING, 9)
    # A paused blast waits for an operator, not for capacity; ended blasts owe nothing.
    make_blast(engine, "paused-1", "normal", BlastStatus.PAUSED)
    add_rows(engine, "paused-1", "sms", RowState.PENDING, 100)
    add_rows(engine, "paused-1", "sms", RowState.FAILED, 50, error_code="30007")
    make_blast(engine, "done-1", "normal", BlastStatus.COMPLETED)
    add_rows(engine, "done-1", "sms", RowState.SENT, 20)
    make_blast(engine, "canceled-1", "normal", BlastStatus.CANCELED)
    add_rows(engine, "canceled-1", "email", RowState.PENDING, 6)  # a racing batch put it back
    return engine


EXPECTED_BACKLOG = {
    ("sms", "urgent"): 35,
    ("sms", "normal"): 0,
    ("sms", "bulk"): 0,
    ("email", "urgent"): 12,
    ("email", "normal"): 0,
    ("email", "bulk"): 9,
}


@pytest.mark.integration
def test_backlog_counts_pending_and_sending_of_live_blasts_per_lane(ledger: Engine) -> None:
    # Given the ledger above
    # When the backlog is computed
    backlog = compute_backlog(SqlReportStore(ledger))
    # Then every lane is present, and only pending + sending rows of sending/expanding
    # blasts count: not deferred rows, not paused, completed or canceled blasts
    assert backlog == EXPECTED_BACKLOG


@pytest.mark.integration
def test_an_empty_ledger_has_every_lane_at_zero(engine: Engine) -> None:
    # Given no blast at all; then zeros are still reported (so the group can scale in)
    assert compute_backlog(SqlReportStore(engine)) == dict.fromkeys(EXPECTED_BACKLOG, 0)


@pytest.mark.integration
def test_outcomes_count_attempted_failed_and_carrier_filtered_of_live_blasts(
    ledger: Engine,
) -> None:
    outcomes = compute_outcomes(SqlReportStore(ledger))
    # sms: 50 sent + 10 delivered + 6 failed; email: 4 failed; 30007 and 30034 are filtering
    assert outcomes == Outcomes(
        attempted={"sms": 66, "email": 4}, failed={"sms": 6, "email": 4}, carrier_filtered=4
    )


# --- the publisher ---------------------------------------------------------------------------


class RecordingCloudWatch:
    """Stands in for a boto3 CloudWatch client: records calls."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def put_metric_data(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {}


def _dims(datum: dict[str, Any]) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in datum["Dimensions"]}


def test_publish_sends_one_batched_call_with_lanes_channel_totals_and_total() -> None:
    # Given a backlog and outcomes
    cloudwatch = RecordingCloudWatch()
    outcomes = Outcomes({"sms": 66, "email": 4}, {"sms": 6, "email": 4}, 4)
    # When they are published
    BacklogPublisher(cloudwatch, "Ns", "p1").publish(EXPECTED_BACKLOG, outcomes)
    # Then it is one PutMetricData call (within the 20-datum limit of older APIs)
    assert len(cloudwatch.calls) == 1
    call = cloudwatch.calls[0]
    assert call["Namespace"] == "Ns"
    data = call["MetricData"]
    assert len(data) <= 20
    got = {(d["MetricName"], tuple(sorted(_dims(d).items()))): d["Value"] for d in data}
    lanes = {
        (BACKLOG, (("Channel", c), ("Prefix", "p1"), ("Priority", p))): float(n)
        for (c, p), n in EXPECTED_BACKLOG.items()
    }
    assert {k: v for k, v in got.items() if len(k[1]) == 3} == lanes
    assert got[(BACKLOG, (("Channel", "sms"), ("Prefix", "p1")))] == 35.0
    assert got[(BACKLOG, (("Channel", "email"), ("Prefix", "p1")))] == 21.0
    assert got[(BACKLOG, (("Prefix", "p1"),))] == 56.0
    assert got[(ATTEMPTED, (("Channel", "sms"), ("Prefix", "p1")))] == 66.0
    assert got[(FAILED, (("Channel", "email"), ("Prefix", "p1")))] == 4.0
    assert got[(CARRIER_FILTERED, (("Channel", "sms"), ("Prefix", "p1")))] == 4.0
    assert all(d["Unit"] == "Count" for d in data)


# --- against moto's CloudWatch ------------------------------------------------------------------


@pytest.fixture
def cloudwatch(moto_url: str) -> Iterator[Any]:
    """A boto3 CloudWatch client on the moto server (dummy credentials, us-east-1)."""
    client = moto_client("cloudwatch", moto_url)
    yield client
    client.close()


def read_stat(cloudwatch: Any, name: str, dimensions: dict[str, str]) -> list[float]:
    """Maximum per minute of one metric over the last ten minutes."""
    now = datetime.now(UTC)
    response = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )
    return [p["Maximum"] for p in response["Datapoints"]]


@pytest.mark.integration
def test_publish_backlog_lands_in_cloudwatch_with_its_dimensions(
    ledger: Engine, cloudwatch: Any, prefix: str
) -> None:
    # Given the ledger above
    # When the scheduler's entry point publishes it
    summary = publish_backlog(SqlReportStore(ledger), cloudwatch, prefix)
    # Then it reports what it sent
    assert summary["backlog_total"] == 56
    assert summary["backlog"]["sms/urgent"] == 35 and summary["backlog"]["email/bulk"] == 9
    assert summary["carrier_filtered"] == 4
    # And CloudWatch holds each metric under exactly its dimensions
    assert read_stat(cloudwatch, BACKLOG, {"Prefix": prefix}) == [56.0]
    assert read_stat(cloudwatch, BACKLOG, {"Prefix": prefix, "Channel": "sms"}) == [35.0]
    lane = {"Prefix": prefix, "Channel": "email", "Priority": "bulk"}
    assert read_stat(cloudwatch, BACKLOG, lane) == [9.0]
    lane_zero = {"Prefix": prefix, "Channel": "sms", "Priority": "bulk"}
    assert read_stat(cloudwatch, BACKLOG, lane_zero) == [0.0]
    sms = {"Prefix": prefix, "Channel": "sms"}
    assert read_stat(cloudwatch, ATTEMPTED, sms) == [66.0]
    assert read_stat(cloudwatch, FAILED, sms) == [6.0]
    assert read_stat(cloudwatch, CARRIER_FILTERED, sms) == [4.0]
    # And the metrics listed under this prefix are exactly the ones the template reads
    listed = cloudwatch.list_metrics(
        Namespace=NAMESPACE, Dimensions=[{"Name": "Prefix", "Value": prefix}]
    )["Metrics"]
    names = {(m["MetricName"], tuple(sorted(d["Name"] for d in m["Dimensions"]))) for m in listed}
    assert names == {
        (BACKLOG, ("Channel", "Prefix", "Priority")),
        (BACKLOG, ("Channel", "Prefix")),
        (BACKLOG, ("Prefix",)),
        (ATTEMPTED, ("Channel", "Prefix")),
        (FAILED, ("Channel", "Prefix")),
        (CARRIER_FILTERED, ("Channel", "Prefix")),
    }
