"""Fault injection shared by the Twilio and SendGrid emulators.

A :class:`Faults` object holds one immutable :class:`FaultConfig` and a seeded random number
generator. Tests and the ``POST /_emulator/faults`` route replace the config atomically with
:meth:`Faults.update`, so a request handler always sees one consistent set of values.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: What :meth:`Faults.roll` can decide for one request, besides ``None`` (serve it normally).
Fault = Literal["timeout", "429", "500"]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """One consistent set of fault settings. Never mutate it: call :meth:`Faults.update`."""

    #: Added to every provider request before it is answered, in milliseconds. Implemented with
    #: ``asyncio.sleep``, so slow requests overlap instead of queueing behind each other.
    latency_ms: float = 0.0
    #: Extra latency drawn uniformly from ``[0, latency_jitter_ms]`` per request, in milliseconds.
    latency_jitter_ms: float = 0.0
    #: Probability (0..1) that an authenticated request is answered with HTTP 500.
    error_500_rate: float = 0.0
    #: Probability (0..1) that an authenticated request is answered with HTTP 429.
    error_429_rate: float = 0.0
    #: Value of the ``Retry-After`` header on 429 responses, in whole seconds (HTTP allows no
    #: fractions there).
    retry_after_s: int = 1
    #: Probability (0..1) that a request is held without an answer, so the client times out.
    timeout_rate: float = 0.0
    #: How long a "timed out" request is held before the emulator gives up with a 503, in
    #: seconds. The hold also ends as soon as the client hangs up.
    timeout_hold_s: float = 30.0
    #: Twilio: ``To`` number → Twilio error code returned synchronously with HTTP 400
    #: (``21610`` unsubscribed, ``21211`` invalid number, ``21614`` not a mobile number, …).
    number_errors: Mapping[str, int] = field(default_factory=dict)
    #: Twilio: ``To`` number → error code reported asynchronously: the message is accepted,
    #: then its status callback says ``undelivered`` with this ``ErrorCode`` (e.g. ``30003``).
    delivery_errors: Mapping[str, int] = field(default_factory=dict)
    #: SendGrid: recipient address (case-insensitive) → HTTP status the whole request fails
    #: with, as SendGrid fails a whole call for one bad address.
    email_errors: Mapping[str, int] = field(default_factory=dict)
    #: Twilio: POST ``sent`` then ``delivered`` to each message's ``StatusCallback``.
    status_callbacks: bool = False
    #: Twilio: pause before each status callback, in milliseconds.
    callback_delay_ms: float = 0.0
    #: Refuse every provider request's credentials, however good (a rotated Twilio auth
    #: token, a revoked SendGrid key), with HTTP :attr:`reject_status`.
    reject_credentials: bool = False
    #: 401 (bad credentials) or 403 (credentials good, access forbidden).
    reject_status: int = 401
    #: Twilio: fields that replace those of the Message resource answered on create, e.g.
    #: ``{"num_segments": "laboris enim magna"}``: values a mock of Twilio's API description
    #: may send (it types the field as a string), to prove the client reads them defensively.
    resource_overrides: Mapping[str, Any] = field(default_factory=dict)
    #: Twilio: share (0..1) of accepted messages whose status callback says ``undelivered``
    #: with :attr:`callback_error_code` (carrier filtering arrives this way, never at send).
    callback_error_rate: float = 0.0
    #: Twilio: the ``ErrorCode`` of those callbacks (``30007`` filtered, ``30034`` unregistered).
    callback_error_code: int = 30007
    #: Seed of the random number generator; setting it (again) restarts the sequence, so a
    #: test sees the same faults in the same order. ``None`` seeds from the OS.
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, the shape ``POST /_emulator/faults`` accepts."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("number_errors", "delivery_errors", "email_errors", "resource_overrides"):
            out[name] = dict(out[name])
        return out


_RATES = ("error_500_rate", "error_429_rate", "timeout_rate")
_NON_NEGATIVE = ("latency_ms", "latency_jitter_ms", "timeout_hold_s", "callback_delay_ms")
_CODE_MAPS = ("number_errors", "delivery_errors", "email_errors")
FAULT_NAMES = frozenset(f.name for f in dataclasses.fields(FaultConfig))


def _coerce(name: str, value: Any) -> Any:
    """Check one setting's type and range; raise ``ValueError`` naming it when wrong."""
    # bool is an int in Python; a JSON `true` for a number is a mistake worth reporting.
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if name in _RATES:
        if not is_number or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
        return float(value)
    if name in _NON_NEGATIVE:
        if not is_number or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        return float(value)
    if name == "retry_after_s":
        if not is_number or value < 0 or int(value) != value:
            raise ValueError(f"retry_after_s must be a whole number >= 0, got {value!r}")
        return int(value)
    if name in ("status_callbacks", "reject_credentials"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if name == "reject_status":
        if value not in (401, 403) or isinstance(value, bool):
            raise ValueError(f"reject_status must be 401 or 403, got {value!r}")
        return int(value)
    if name == "callback_error_rate":
        if not is_number or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
        return float(value)
    if name == "callback_error_code":
        if not is_number or isinstance(value, float) or value <= 0:
            raise ValueError(f"callback_error_code must be a positive integer, got {value!r}")
        return int(value)
    if name == "resource_overrides":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError(
                f"resource_overrides must be an object of field → value, got {value!r}"
            )
        return dict(value)
    if name == "seed":
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"seed must be an integer or null, got {value!r}")
        return value
    if name in _CODE_MAPS:
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be an object of address → code, got {value!r}")
        out: dict[str, int] = {}
        for key, code in value.items():
            if not isinstance(key, str) or isinstance(code, bool) or not isinstance(code, int):
                raise ValueError(f"{name} must map strings to integers, got {key!r}: {code!r}")
            out[key.lower() if name == "email_errors" else key] = code
        return out
    raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULT_NAMES))}")


class Faults:
    """Thread-safe holder of the current :class:`FaultConfig` and its random number generator.

    The emulator's event loop reads it while a test thread or an HTTP request changes it.
    """

    __slots__ = ("_config", "_lock", "_rng")

    def __init__(self, **settings: Any) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        # Fault dice, never secrets: a seedable generator is the point.
        self._rng = random.Random()
        if settings:
            self.update(**settings)

    @property
    def config(self) -> FaultConfig:
        """The current settings (an immutable snapshot)."""
        return self._config

    def update(self, **changes: Any) -> FaultConfig:
        """Change some settings, keep the others; return the new config.

        Raises ``ValueError`` for an unknown name or a bad value, changing nothing.
        """
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        with self._lock:
            new = dataclasses.replace(self._config, **coerced)
            if sum(getattr(new, name) for name in _RATES) > 1.0:
                raise ValueError("error_500_rate + error_429_rate + timeout_rate must be <= 1")
            self._config = new
            if "seed" in coerced:
                self._rng.seed(new.seed)
            return new

    def reset(self) -> FaultConfig:
        """Back to no faults at all (and an OS-seeded generator)."""
        with self._lock:
            self._config = FaultConfig()
            self._rng.seed(None)
            return self._config

    def roll(self) -> Fault | None:
        """Decide whether this request fails, and how. One draw per request, in order."""
        config = self._config
        if not (config.timeout_rate or config.error_429_rate or config.error_500_rate):
            return None  # the common case: no lock, no draw
        with self._lock:
            draw = self._rng.random()
        if draw < config.timeout_rate:
            return "timeout"
        if draw < config.timeout_rate + config.error_429_rate:
            return "429"
        if draw < config.timeout_rate + config.error_429_rate + config.error_500_rate:
            return "500"
        return None

    def callback_error(self) -> int | None:
        """The error code this accepted message's callback reports, drawn at
        :attr:`FaultConfig.callback_error_rate`; None: delivered."""
        config = self._config
        if not config.callback_error_rate:
            return None
        with self._lock:
            draw = self._rng.random()
        return config.callback_error_code if draw < config.callback_error_rate else None

    def latency_s(self) -> float:
        """How long to delay this request, in seconds."""
        config = self._config
        if not config.latency_jitter_ms:
            return config.latency_ms / 1000.0
        with self._lock:
            jitter = self._rng.uniform(0.0, config.latency_jitter_ms)
        return (config.latency_ms + jitter) / 1000.0
