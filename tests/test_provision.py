"""`rapid provision` against a real moto server: it creates everything, a rerun changes nothing."""

from __future__ import annotations

import json
from functools import partial

import pytest

from tests import fleet

#: The commands' failures are part of what is tested: the tests read the return code.
rapid = partial(fleet.rapid, check=False)


def snapshot(moto_url: str, prefix: str) -> dict[str, object]:
    """Every SNS/SQS resource of this prefix, as AWS reports it."""
    sns, sqs = fleet.aws_clients(moto_url)
    topics = sorted(
        t["TopicArn"] for t in sns.list_topics()["Topics"] if f":{prefix}-" in t["TopicArn"]
    )
    subs = sorted(
        (s["TopicArn"], s["Protocol"], s["Endpoint"])
        for t in topics
        for s in sns.list_subscriptions_by_topic(TopicArn=t)["Subscriptions"]
    )
    queues = {}
    for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        queues[url] = {
            k: v
            for k, v in attrs.items()
            if k
            not in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
                "LastModifiedTimestamp",
            )
        }
    return {"topics": topics, "subscriptions": subs, "queues": queues}


@pytest.mark.integration
def test_provision_twice_converges(rapid_env: dict[str, str], moto_url: str, prefix: str) -> None:
    # Given an empty account, when provisioning with one alert topic
    first = rapid(rapid_env, "provision", "--topic", "debate-night", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    # Then the topic, the intake queue, its DLQ and the subscription exist
    assert f"sns-topic:{prefix}-alert-debate-night" in report["created"]
    assert f"sqs-queue:{prefix}-intake" in report["created"]
    assert f"sqs-queue:{prefix}-intake-dlq" in report["created"]
    state = snapshot(moto_url, prefix)
    assert len(state["topics"]) == 1
    assert len(state["subscriptions"]) == 1
    intake = next(q for u, q in state["queues"].items() if u.endswith(f"/{prefix}-intake"))
    redrive = json.loads(intake["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(f":{prefix}-intake-dlq")
    assert int(redrive["maxReceiveCount"]) == 5
    assert intake["ReceiveMessageWaitTimeSeconds"] == "20"

    # When provisioning again
    second = rapid(rapid_env, "provision", "--json")
    assert second.returncode == 0, second.stderr
    # Then nothing was created or updated, and AWS holds exactly the same resources
    again = json.loads(second.stdout)
    assert again["created"] == [] and again["updated"] == []
    assert snapshot(moto_url, prefix) == state


@pytest.mark.integration
def test_topics_create_then_list(rapid_env: dict[str, str], moto_url: str, prefix: str) -> None:
    # Given a provisioned fleet, when an operator creates a second topic
    assert rapid(rapid_env, "provision").returncode == 0
    created = rapid(rapid_env, "topics", "create", "town-hall")
    assert created.returncode == 0, created.stderr
    # Then it is listed, with its SNS topic subscribed to the intake queue
    listed = json.loads(rapid(rapid_env, "topics", "list", "--json").stdout)
    assert [t["name"] for t in listed] == ["town-hall"]
    assert listed[0]["sns_topic_arn"].endswith(f":{prefix}-alert-town-hall")
    assert len(snapshot(moto_url, prefix)["subscriptions"]) == 1


def test_bad_topic_name_is_a_clear_error(rapid_env: dict[str, str]) -> None:
    # When a topic name breaks the contract's rule, then exit 1 with one line and no traceback
    result = rapid(rapid_env, "topics", "create", "Debate Night!")
    assert result.returncode == 1
    assert result.stderr.startswith("error: invalid topic name")
    assert "Traceback" not in result.stderr
