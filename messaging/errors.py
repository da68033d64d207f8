"""The one error tree of Rapid Response.

Everything we raise on purpose derives from :class:`RapidError`, so entry points can tell an
expected failure (print one line, exit 1) from a bug (let the traceback through).
"""

from __future__ import annotations

# The root and the settings' error live in config (the lowest layer); re-exported here.
from config.errors import ConfigError as ConfigError
from config.errors import RapidError as RapidError


class InputError(RapidError):
    """Input from an operator or another system is unusable (a bad CSV, a bad alert)."""


class ServiceUnavailableError(RapidError):
    """A service we depend on (database, Redis, AWS) does not answer."""


class SendError(RapidError):
    """A provider refused or failed a send.

    ``code`` is the provider's own error code (Twilio's ``21610``, an HTTP status for
    SendGrid), kept so the ledger records what the provider said.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class PermanentSendError(SendError):
    """Retrying will not help: a bad number, an unsubscribed recipient, a rejected payload."""

    def __init__(self, message: str, *, code: str | None = None, suppress: bool = False) -> None:
        super().__init__(message, code=code)
        #: True when the provider told us the recipient opted out (Twilio 21610), so the
        #: destination must be added to the suppression list, not just failed.
        self.suppress = suppress


class TransientSendError(SendError):
    """Worth retrying later: HTTP 429, 5xx, a timeout, a dropped connection."""

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        #: The provider's ``Retry-After``, in seconds, when it sent one.
        self.retry_after_s = retry_after_s


class ProviderAuthError(SendError):
    """The provider refused our credentials (HTTP 401/403): an operator must fix a secret.

    Permanent for the fleet, not for the recipient: nothing is failed for it; the channel's
    running blasts pause (``pause_reason: provider_auth``) and resume sends what is left.
    Never retried: every further call would be refused the same way.
    """


class InDoubtSendError(SendError):
    """The provider may or may not have accepted the message (an unexpected error around
    the call): the row is left to the sweep, which asks the provider where it can."""
