"""Alert topic names (contract §3): ``[a-z0-9-]{1,64}``."""

from __future__ import annotations

import re

from messaging.errors import InputError

#: What an alert topic may be called; it becomes part of SNS topic names.
TOPIC_NAME_RE = re.compile(r"^[a-z0-9-]{1,64}$")


def validate_topic_name(name: str) -> str:
    """Return ``name`` if it is a valid alert topic name, else raise :class:`InputError`."""
    if not TOPIC_NAME_RE.match(name):
        raise InputError(f"invalid topic name {name!r}: use 1-64 characters of a-z, 0-9 and '-'")
    return name
