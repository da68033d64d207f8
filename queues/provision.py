"""``rapid provision``: the SNS topics, the intake queue with its DLQ, and the subscriptions.

Every step is a create-or-update that converges: running it twice leaves exactly the same
resources (SNS ``CreateTopic``/``Subscribe`` and SQS ``CreateQueue`` are idempotent for the
same attributes; attributes we own are re-applied with ``SetQueueAttributes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import structlog

from config.names import Names

log = structlog.get_logger(__name__)

#: How long an alert stays invisible after a receive; the intake extends it while expanding.
INTAKE_VISIBILITY_TIMEOUT_S = 60
#: Deliveries of one message before SQS moves it to the DLQ (a crash loop, not a bad alert:
#: malformed alerts are moved at once by the intake worker).
INTAKE_MAX_RECEIVE_COUNT = 5
#: Long polling by default, so idle workers cost almost no requests.
RECEIVE_WAIT_TIME_S = 20
#: Alerts older than a day are news nobody wants; the DLQ keeps its evidence for 14 days.
INTAKE_RETENTION_S = 86_400
DLQ_RETENTION_S = 1_209_600


@dataclass
class ProvisionReport:
    """What provisioning found and did; ``created`` is empty on a second run."""

    intake_queue_url: str = ""
    intake_dlq_url: str = ""
    topics: dict[str, str] = field(default_factory=dict)  # alert topic → SNS topic ARN
    subscriptions: dict[str, str] = field(default_factory=dict)  # alert topic → subscription ARN
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for ``--json``."""
        return {
            "intake_queue_url": self.intake_queue_url,
            "intake_dlq_url": self.intake_dlq_url,
            "topics": self.topics,
            "subscriptions": self.subscriptions,
            "created": self.created,
            "updated": self.updated,
        }


class Provisioner:
    """Creates or updates the fleet's SNS/SQS resources through injected boto3 clients."""

    def __init__(self, names: Names, sns: Any, sqs: Any) -> None:
        self._names = names
        self._sns = sns
        self._sqs = sqs

    def ensure_queues(self, report: ProvisionReport) -> tuple[str, str]:
        """The intake queue and its DLQ, redrive policy and SNS access policy; returns the ARNs."""
        dlq_url = self._ensure_queue(
            self._names.intake_dlq,
            {"MessageRetentionPeriod": str(DLQ_RETENTION_S)},
            report,
        )
        dlq_arn = self._queue_arn(dlq_url)
        intake_url = self._queue_url(self._names.intake_queue)
        intake_arn = (
            self._queue_arn(intake_url)
            if intake_url
            else _arn_like(dlq_arn, self._names.intake_queue)
        )
        region, account = intake_arn.split(":")[3], intake_arn.split(":")[4]
        topic_arn_pattern = f"arn:aws:sns:{region}:{account}:{self._names.alert_topic('*')}"
        attributes = {
            "VisibilityTimeout": str(INTAKE_VISIBILITY_TIMEOUT_S),
            "ReceiveMessageWaitTimeSeconds": str(RECEIVE_WAIT_TIME_S),
            "MessageRetentionPeriod": str(INTAKE_RETENTION_S),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(INTAKE_MAX_RECEIVE_COUNT)},
                sort_keys=True,
            ),
            # Only our alert topics may write to the intake queue.
            "Policy": json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "alert-topics-publish",
                            "Effect": "Allow",
                            "Principal": {"Service": "sns.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": intake_arn,
                            "Condition": {"ArnLike": {"aws:SourceArn": topic_arn_pattern}},
                        }
                    ],
                },
                sort_keys=True,
            ),
        }
        intake_url = self._ensure_queue(self._names.intake_queue, attributes, report)
        report.intake_queue_url, report.intake_dlq_url = intake_url, dlq_url
        return intake_arn, dlq_arn

    def ensure_topic(self, topic: str, intake_arn: str, report: ProvisionReport) -> str:
        """The SNS topic of one alert topic, subscribed to the intake queue; returns its ARN."""
        name = self._names.alert_topic(topic)
        existing = self._find_topic_arn(name)
        topic_arn = existing or self._sns.create_topic(Name=name)["TopicArn"]
        if existing is None:
            report.created.append(f"sns-topic:{name}")
        report.topics[topic] = topic_arn

        sub_arn = self._find_subscription(topic_arn, intake_arn)
        if sub_arn is None:
            sub_arn = self._sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=intake_arn,
                # The envelope keeps TopicArn and MessageId, which name the topic and serve as
                # the fallback alert id; the intake accepts raw delivery too.
                Attributes={"RawMessageDelivery": "false"},
                ReturnSubscriptionArn=True,
            )["SubscriptionArn"]
            report.created.append(f"subscription:{name}")
        report.subscriptions[topic] = sub_arn
        return str(topic_arn)

    # --- helpers ------------------------------------------------------------------------

    def _queue_url(self, name: str) -> str | None:
        try:
            return str(self._sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except self._sqs.exceptions.QueueDoesNotExist:
            return None

    def _queue_arn(self, url: str) -> str:
        attrs = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    def _ensure_queue(self, name: str, attributes: dict[str, str], report: ProvisionReport) -> str:
        url = self._queue_url(name)
        if url is None:
            url = str(self._sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
            report.created.append(f"sqs-queue:{name}")
            return url
        self._set_attributes(url, attributes, report, name)
        return url

    def _set_attributes(
        self, url: str, wanted: dict[str, str], report: ProvisionReport, name: str
    ) -> None:
        # "All", not the names we want: some emulators reject names they do not model.
        current = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get(
            "Attributes", {}
        )
        changed = {k: v for k, v in wanted.items() if not _same_attribute(current.get(k), v)}
        if changed:
            self._sqs.set_queue_attributes(QueueUrl=url, Attributes=changed)
            report.updated.append(f"sqs-queue:{name}:{','.join(sorted(changed))}")

    def _find_topic_arn(self, name: str) -> str | None:
        for page in self._sns.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                if topic["TopicArn"].rsplit(":", 1)[-1] == name:
                    return str(topic["TopicArn"])
        return None

    def _find_subscription(self, topic_arn: str, endpoint_arn: str) -> str | None:
        paginator = self._sns.get_paginator("list_subscriptions_by_topic")
        for page in paginator.paginate(TopicArn=topic_arn):
            for sub in page.get("Subscriptions", []):
                if sub["Protocol"] == "sqs" and sub["Endpoint"] == endpoint_arn:
                    return str(sub["SubscriptionArn"])
        return None


def _arn_like(sibling_arn: str, name: str) -> str:
    return sibling_arn.rsplit(":", 1)[0] + ":" + name


def _same_attribute(current: str | None, wanted: str) -> bool:
    """JSON attributes compare as JSON: AWS may reorder keys or retype numbers."""
    if current is None:
        return False
    if current == wanted:
        return True
    try:
        return _canon(json.loads(current)) == _canon(json.loads(wanted))
    except ValueError:
        return False


def _canon(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return str(value)


class AwsResources:
    """:class:`~messaging.ports.ResourceProvisioner` over a :class:`Provisioner`, collecting
    what it did in :attr:`report`."""

    def __init__(self, provisioner: Provisioner) -> None:
        self._provisioner = provisioner
        self.report = ProvisionReport()

    def ensure_queues(self) -> str:
        """See :class:`~messaging.ports.ResourceProvisioner`."""
        intake_arn, _dlq_arn = self._provisioner.ensure_queues(self.report)
        return intake_arn

    def ensure_topic(self, topic: str, intake_arn: str) -> str:
        """See :class:`~messaging.ports.ResourceProvisioner`."""
        return self._provisioner.ensure_topic(topic, intake_arn, self.report)


class SnsPublisher:
    """:class:`~messaging.ports.AlertPublisher` through an injected boto3 SNS client."""

    def __init__(self, sns: Any) -> None:
        self._sns = sns

    def publish(self, topic_arn: str, message: str) -> str:
        """See :class:`~messaging.ports.AlertPublisher`."""
        return str(self._sns.publish(TopicArn=topic_arn, Message=message)["MessageId"])
