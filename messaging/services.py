"""What the CLI, the HTTP API and the demo share: publish an alert, provision the fleet.

Below all three (they live in ``workers/``), so none of them imports another's module; the
transports they need (SNS, SQS) come in as :mod:`messaging.ports` adapters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from messaging.errors import InputError
from messaging.ports import AlertPublisher, ResourceProvisioner, TopicStore


def publish_alert(
    topics: TopicStore, publisher: AlertPublisher, topic: str, document: Mapping[str, Any]
) -> str:
    """Publish a validated alert document to its topic; returns the transport's message id.

    :class:`InputError` when the topic has no SNS topic yet (``rapid topics create``).
    """
    info = topics.get(topic)
    if info is None or not info.sns_topic_arn:
        raise InputError(f"topic {topic!r} is not provisioned: run `rapid topics create {topic}`")
    return publisher.publish(info.sns_topic_arn, json.dumps(document))


def provision(
    migrate: Callable[[], None],
    topics: TopicStore,
    resources: ResourceProvisioner,
    extra_topics: Iterable[str] = (),
) -> list[str]:
    """Migrate the schema, then create or update the queues and every registered topic
    (plus ``extra_topics``, registered first); returns the topics provisioned."""
    migrate()
    for name in extra_topics:
        topics.register(name)
    intake_arn = resources.ensure_queues()
    names = topics.names()
    for name in names:
        topics.register(name, resources.ensure_topic(name, intake_arn))
    return names
