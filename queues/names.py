"""Moved to :mod:`config.names` (the domain and the transports both name things by prefix)."""

from config.names import Names

__all__ = ["Names"]
