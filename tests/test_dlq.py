"""`rapid dlq list|replay` on the intake DLQ (moto) and the send lanes' dead letters (Redis)."""

from __future__ import annotations

import json
from functools import partial

import pytest

from config.settings import load_settings
from messaging.ports import SendWork
from tests import fleet
from tests.fleet import intake_worker, wait_until
from workers.app import App

pytestmark = pytest.mark.integration


#: Operators' commands here are tested for failing too: the test reads the return code.
rapid = partial(fleet.rapid, check=False)


def test_intake_dead_letters_are_listed_with_reasons_and_replayed(
    rapid_env: dict[str, str],
) -> None:
    assert rapid(rapid_env, "provision", "--topic", "debate-night").returncode == 0
    app = App(load_settings(rapid_env))
    dlq_url = app.sqs.get_queue_url(QueueName=app.names.intake_dlq)["QueueUrl"]
    # Given a malformed alert the intake rejected, and a good one SQS redrove after crashes
    app.sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody="{oops to +14155550100",
        MessageAttributes={
            "reason": {"DataType": "String", "StringValue": "alert is not valid JSON"}
        },
    )
    good = json.dumps({"alert_id": "dlq-1", "topic": "debate-night", "sms": {"body": "Hi"}})
    good_id = app.sqs.send_message(QueueUrl=dlq_url, MessageBody=good)["MessageId"]
    # When an operator lists them
    listed = rapid(rapid_env, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = {d["id"]: d for d in json.loads(listed.stdout)}
    # Then each shows its reason and a preview with nothing personal in it
    assert items[good_id]["reason"] == "redriven after repeated failures"
    assert '"alert_id": "dlq-1"' in items[good_id]["preview"]
    bad = next(d for i, d in items.items() if i != good_id)
    assert bad["reason"] == "alert is not valid JSON" and "4155550100" not in bad["preview"]
    # When the good one is replayed, it is back on the intake queue and gets processed
    replayed = rapid(rapid_env, "dlq", "replay", good_id)
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout
    with intake_worker(app):
        wait_until(lambda: app.blasts.get("dlq-1") is not None, "the replayed alert's blast")
    # And the malformed one is still in the DLQ; an unknown id is an error
    assert [d["id"] for d in json.loads(rapid(rapid_env, "dlq", "list", "--json").stdout)] == [
        bad["id"]
    ]
    missing = rapid(rapid_env, "dlq", "replay", "no-such-id")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
    app.close()


def test_send_lane_dead_letters_are_replayed_to_their_lane(rapid_env: dict[str, str]) -> None:
    assert rapid(rapid_env, "provision").returncode == 0
    app = App(load_settings(rapid_env))
    lanes = app.lanes
    # Given a batch whose handler kept failing until dramatiq dead-lettered it
    lanes.enqueue(SendWork("blast-x", "sms", "normal", (1, 2, 3)))
    consumer = lanes.broker.consume("sms-normal", prefetch=1, timeout=1000)
    message = next(m for m in consumer if m is not None)
    consumer.nack(message)
    consumer.close()
    listed = json.loads(rapid(rapid_env, "dlq", "list", "--json").stdout)
    lane_items = [d for d in listed if d["source"] == "sms-normal"]
    assert len(lane_items) == 1 and lane_items[0]["preview"] == "blast blast-x: 3 recipients"
    # When replayed, it is back on its lane, once
    assert "replayed 1" in rapid(rapid_env, "dlq", "replay", "--all").stdout
    queue_key = f"{app.names.prefix}-dramatiq:sms-normal"
    assert app.redis.llen(queue_key) == 1
    assert [
        d
        for d in json.loads(rapid(rapid_env, "dlq", "list", "--json").stdout)
        if d["source"] != "intake"
    ] == []
    app.close()
