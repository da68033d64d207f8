"""Dashboard sessions: a random id in an HttpOnly cookie, the session itself in Redis.

The browser holds only an unguessable id (256 bits); the server keeps who logged in and the
session's CSRF token, under the SHA-256 of the id (a copy of Redis opens no session). A
logout deletes the session everywhere at once, and every request re-reads the operator from
the system of record, so a revoked operator's session stops working at their next click.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol

from config.names import Names

#: Name of the session cookie.
SESSION_COOKIE: Final = "rr_session"
#: Name of the cookie that carries the login form's CSRF token (double submit: no session
#: exists yet to hold it).
LOGIN_CSRF_COOKIE: Final = "rr_login_csrf"
#: How long a session lasts without logging in again, in seconds (a debate night and more).
SESSION_TTL_S: Final = 12 * 3600
#: Random bytes of a session id and of a CSRF token.
TOKEN_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class Session:
    """One logged-in browser."""

    #: The operator's name (``bootstrap`` for ``RAPID_API_TOKEN``).
    operator: str
    #: When that operator was created (ISO 8601): a name revoked and added again is a new
    #: operator, and the old sessions must not carry over to them.
    operator_created_at: str
    #: The token every form of this session posts back.
    csrf: str
    #: Epoch seconds of the login.
    created_at: float


class SessionStore(Protocol):
    """Where sessions live, keyed by the digest of their id."""

    def put(self, digest: str, session: Session, ttl_s: int) -> None:
        """Store a session for ``ttl_s`` seconds."""
        ...

    def get(self, digest: str) -> Session | None:
        """The live session, or None."""
        ...

    def delete(self, digest: str) -> None:
        """End a session (logout)."""
        ...


def _encode(session: Session) -> str:
    return json.dumps(asdict(session), separators=(",", ":"))


def _decode(raw: str | bytes) -> Session | None:
    try:
        data: dict[str, Any] = json.loads(raw)
        return Session(
            operator=str(data["operator"]),
            operator_created_at=str(data["operator_created_at"]),
            csrf=str(data["csrf"]),
            created_at=float(data["created_at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


class RedisSessionStore:
    """Sessions in Redis: one key per session with its TTL (``SET … EX``), so the fleet's
    ``rapid web`` processes share them and expiry needs no sweeper."""

    def __init__(self, client: Any, names: Names) -> None:
        self._redis = client
        self._names = names

    def _key(self, digest: str) -> str:
        return self._names.redis_key("dashboard-session", digest)

    def put(self, digest: str, session: Session, ttl_s: int) -> None:
        self._redis.set(self._key(digest), _encode(session), ex=ttl_s)

    def get(self, digest: str) -> Session | None:
        raw = self._redis.get(self._key(digest))
        return _decode(raw) if raw is not None else None

    def delete(self, digest: str) -> None:
        self._redis.delete(self._key(digest))


class MemorySessionStore:
    """The one-process twin of :class:`RedisSessionStore`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def put(self, digest: str, session: Session, ttl_s: int) -> None:
        with self._lock:
            self._sessions[digest] = (self._clock() + ttl_s, _encode(session))

    def get(self, digest: str) -> Session | None:
        with self._lock:
            found = self._sessions.get(digest)
            if found is None or found[0] <= self._clock():
                self._sessions.pop(digest, None)
                return None
        return _decode(found[1])

    def delete(self, digest: str) -> None:
        with self._lock:
            self._sessions.pop(digest, None)


def new_token() -> str:
    """A fresh session id or CSRF token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(session_id: str) -> str:
    """What a session is stored under."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; False when either is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class Sessions:
    """Opens, reads and closes sessions over a :class:`SessionStore`."""

    def __init__(
        self,
        store: SessionStore,
        *,
        ttl_s: int = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock

    @property
    def ttl_s(self) -> int:
        """Lifetime of a session, in seconds (also the cookie's Max-Age)."""
        return self._ttl_s

    def open(self, operator: str, operator_created_at: str) -> tuple[str, Session]:
        """A new session for ``operator``; returns its id (for the cookie) and the session."""
        session_id = new_token()
        session = Session(operator, operator_created_at, new_token(), self._clock())
        self._store.put(digest(session_id), session, self._ttl_s)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The session of a cookie value, or None."""
        if not session_id or len(session_id) > 256:
            return None
        return self._store.get(digest(session_id))

    def close(self, session_id: str | None) -> None:
        """Log out."""
        if session_id and len(session_id) <= 256:
            self._store.delete(digest(session_id))
