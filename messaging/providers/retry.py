"""Retry policy around each provider call (STYLE rule 7, first layer).

Transient errors (429, 5xx, timeouts) are retried a bounded number of times with jittered
exponential backoff, never sooner than the provider's ``Retry-After``; permanent errors are
not retried. What is still failing after the budget goes back to the queue (second layer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from messaging.errors import TransientSendError

T = TypeVar("T")

#: Attempts per provider call, the first included.
MAX_ATTEMPTS = 4
#: Give up on a call (and re-queue it) after this long, so one slow recipient does not hold
#: a worker thread for minutes.
MAX_DELAY_S = 30.0
#: Backoff before the 2nd, 3rd, … attempt: 0.5 s, 1 s, 2 s … plus up to 0.5 s of jitter.
#: (Composed rather than wait_exponential_jitter, whose ``initial`` tenacity 9.2 deprecated
#: and older releases lack the replacement of.)
_BACKOFF = wait_exponential(multiplier=0.5, max=10.0) + wait_random(0, 0.5)


def wait_honouring_retry_after(state: RetryCallState) -> float:
    """Exponential backoff with jitter, but never less than the provider's Retry-After."""
    backoff = float(_BACKOFF(state))
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, TransientSendError) and exc.retry_after_s:
        return max(backoff, float(exc.retry_after_s))
    return backoff


def _policy(sleep: Callable[[float], Any] | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "retry": retry_if_exception_type(TransientSendError),
        "stop": stop_after_attempt(MAX_ATTEMPTS) | stop_after_delay(MAX_DELAY_S),
        "wait": wait_honouring_retry_after,
        "reraise": True,
    }
    if sleep is not None:
        kwargs["sleep"] = sleep
    return kwargs


def call_with_retries(fn: Callable[[], T], *, sleep: Callable[[float], None] | None = None) -> T:
    """Call ``fn`` under the policy (synchronous providers)."""
    return Retrying(**_policy(sleep))(fn)


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]], *, sleep: Callable[[float], Awaitable[None]] | None = None
) -> T:
    """Await ``fn()`` under the policy (asynchronous providers)."""
    async for attempt in AsyncRetrying(**_policy(sleep)):
        with attempt:
            return await fn()
    raise AssertionError("unreachable: reraise=True")  # pragma: no cover
