"""Names of every AWS resource and Redis key family, all derived from ``RAPID_PREFIX``.

One builder, so two environments (or two test runs) with different prefixes never collide.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Names:
    """Resource names for one ``RAPID_PREFIX``."""

    prefix: str

    def alert_topic(self, topic: str) -> str:
        """SNS topic name of an alert topic (contract §3)."""
        return f"{self.prefix}-alert-{topic}"

    def topic_from_sns_name(self, sns_name: str) -> str | None:
        """The alert topic behind an SNS topic name, or None if it is not one of ours."""
        head = f"{self.prefix}-alert-"
        return sns_name[len(head) :] if sns_name.startswith(head) else None

    @property
    def intake_queue(self) -> str:
        """The SQS queue every alert topic feeds."""
        return f"{self.prefix}-intake"

    @property
    def intake_dlq(self) -> str:
        """Where malformed or poison alerts end up, with their reason."""
        return f"{self.prefix}-intake-dlq"

    def redis_key(self, kind: str, *parts: str | int) -> str:
        """A namespaced, versioned Redis key: ``{prefix}:{kind}:v1:part:part``."""
        return ":".join([self.prefix, kind, "v1", *map(str, parts)])
