"""The one application object: settings plus lazily built clients, wired in one place.

Entry points build it with :meth:`App.from_environ`; everything below receives what it needs
from here (STYLE rule 4). Clients are created on first use, so ``rapid --help`` or
``rapid optout check`` never opens an AWS or Redis connection it does not need.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from sqlalchemy import Engine

from config.settings import Settings, load_settings
from queues.names import Names


class App:
    """Settings and the clients built from them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.prefix)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> App:
        """Read the settings once from the process environment."""
        return cls(load_settings(os.environ if environ is None else environ))

    @cached_property
    def engine(self) -> Engine:
        """The system of record."""
        from messaging.store.db import create_db_engine

        return create_db_engine(self.settings.database_url)

    @cached_property
    def aws(self) -> tuple[Any, Any]:
        """``(sns, sqs)`` boto3 clients."""
        from queues.aws import make_clients

        return make_clients(self.settings)

    @property
    def sns(self) -> Any:
        """The SNS client."""
        return self.aws[0]

    @property
    def sqs(self) -> Any:
        """The SQS client."""
        return self.aws[1]

    def close(self) -> None:
        """Release pooled connections."""
        if "engine" in self.__dict__:
            self.engine.dispose()
