"""What the CLI, the HTTP API and the demo share: publish an alert, provision the fleet.

Below all three (they live in ``workers/``), so none of them imports another's module; the
transports they need (SNS, SQS) come in as :mod:`messaging.ports` adapters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from messaging.access.audit import Actor, AuditAction, AuditLog
from messaging.errors import InputError
from messaging.ports import AlertPublisher, ResourceProvisioner, TopicStore

if TYPE_CHECKING:
    from messaging.blasts.approval import Approvals
    from messaging.blasts.blast_control import BlastActions


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


def act_on_blast(
    action: str,
    blast_id: str,
    actor: Actor,
    *,
    actions: BlastActions,
    approvals: Approvals,
    audit: AuditLog,
) -> None:
    """Do one operator action on a blast (pause, resume, cancel, approve, reject) and record
    it: the CLI, the API and the dashboard all come through here, so an action is audited
    the same way whoever asks (approvals record their own, with the approver's checks)."""
    if action in ("approve", "reject"):
        getattr(approvals, action)(blast_id, actor)
        return
    getattr(actions, action)(blast_id)
    audit.record(actor, AuditAction(f"blast.{action}"), blast_id=blast_id)
