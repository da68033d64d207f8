"""The root of the one error tree, kept in the lowest layer so ``config`` needs nothing above.

:mod:`messaging.errors` builds the rest of the tree on :class:`RapidError` and re-exports
both names; entry points catch :class:`RapidError` whatever layer raised it.
"""

from __future__ import annotations


class RapidError(Exception):
    """Root of every error Rapid Response raises on purpose."""


class ConfigError(RapidError):
    """A setting is missing or malformed; the message names the variable."""
