"""Who may do what: operators, their roles, and their personal API tokens (contract §11).

Roles are cumulative: a ``sender`` may do everything a ``viewer`` may, an ``approver``
everything a ``sender`` may, and so on. A token is shown once, when the operator is added;
only its SHA-256 is stored. The HTTP API looks an operator up by that hash, so a stolen copy
of the database holds nothing that opens the API.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, Protocol

from messaging.errors import InputError


class Role(StrEnum):
    """An operator's role; each includes everything the roles before it may do."""

    VIEWER = "viewer"
    SENDER = "sender"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(StrEnum):
    """One thing an operator may be allowed to do."""

    READ = "read"  # blasts, counts, replies, the audit log
    SEND = "send"  # alerts, test sends and dry runs
    PAUSE = "pause"
    APPROVE = "approve"
    REJECT = "reject"
    RESUME = "resume"
    CANCEL = "cancel"
    OPERATORS = "operators"  # add and revoke operators
    OPTOUTS = "optouts"  # add to and remove from the suppression list
    IMPORT = "import"  # supporters imports


_VIEWER: Final = frozenset({Permission.READ})
_SENDER: Final = _VIEWER | {Permission.SEND, Permission.PAUSE}
_APPROVER: Final = _SENDER | {
    Permission.APPROVE,
    Permission.REJECT,
    Permission.RESUME,
    Permission.CANCEL,
}
_ADMIN: Final = frozenset(Permission)

#: What each role may do (contract §11). docs/reference.md lists the same table.
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.VIEWER: _VIEWER,
    Role.SENDER: _SENDER,
    Role.APPROVER: _APPROVER,
    Role.ADMIN: _ADMIN,
}

#: The name the bootstrap ``RAPID_API_TOKEN`` acts as (an admin).
BOOTSTRAP: Final = "bootstrap"
#: Names that stand for the system rather than a person in the audit log: never operators.
RESERVED_NAMES: Final = frozenset({BOOTSTRAP, "sns", "fleet", "system"})
#: Operator names: what OS user names look like (no '@': the audit log masks emails).
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: Every token starts with this, so secret scanners (and people) recognise a leaked one.
TOKEN_PREFIX: Final = "rr_"  # noqa: S105 (a public marker, not a secret)
#: Random bytes per token: 256 bits, far beyond guessing even without the rate limit.
TOKEN_BYTES: Final = 32


def allows(role: Role, permission: Permission) -> bool:
    """True when ``role`` may do ``permission``."""
    return permission in ROLE_PERMISSIONS[role]


def parse_role(raw: str) -> Role:
    """A role from its name; :class:`InputError` naming the choices otherwise."""
    try:
        return Role(raw.strip().lower())
    except ValueError:
        raise InputError(
            f"role {raw!r}: must be one of {', '.join(r.value for r in Role)}"
        ) from None


def check_name(name: str) -> str:
    """A valid, non-reserved operator name (lower-cased), or :class:`InputError`."""
    folded = name.strip().lower()
    if not NAME_PATTERN.match(folded):
        raise InputError(f"operator name {name!r}: 1-64 characters of a-z, 0-9, '.', '_' and '-'")
    if folded in RESERVED_NAMES:
        raise InputError(f"operator name {folded!r} is reserved")
    return folded


def new_token() -> str:
    """A fresh personal token (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """What is stored and looked up instead of the token.

    A plain SHA-256 rather than a slow password hash: the token carries 256 random bits, so
    there is nothing to brute-force, and the API hashes it on every request.
    """
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Operator:
    """A person (or the bootstrap token) allowed to use the fleet."""

    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked_at is None

    def may(self, permission: Permission) -> bool:
        """True when this operator's role allows ``permission``."""
        return self.active and allows(self.role, permission)


class OperatorStore(Protocol):
    """Where operators and their token hashes live."""

    def add(self, operator: Operator, token_hash: str) -> bool:
        """Store a new operator; False if an active one has that name. A revoked name is
        reused (with the new role and token)."""
        ...

    def by_token_hash(self, token_hash: str) -> Operator | None:
        """The active operator whose token hashes to ``token_hash``, or None."""
        ...

    def list(self) -> list[Operator]:
        """Every operator, revoked ones included, by name."""
        ...

    def revoke(self, name: str, at: datetime) -> bool:
        """Revoke an active operator's token; False if there was none."""
        ...


class Operators:
    """Adds, revokes and authenticates operators (the bootstrap token included)."""

    def __init__(
        self,
        store: OperatorStore,
        *,
        bootstrap_token: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._bootstrap = hash_token(bootstrap_token) if bootstrap_token else None
        self._clock = clock

    def add(self, name: str, role: Role, *, created_by: str) -> tuple[Operator, str]:
        """Add an operator; returns it and its token (the only time the token exists)."""
        operator = Operator(
            name=check_name(name), role=role, created_at=self._clock(), created_by=created_by
        )
        token = new_token()
        if not self._store.add(operator, hash_token(token)):
            raise InputError(f"operator {operator.name!r} exists; revoke it first")
        return operator, token

    def revoke(self, name: str) -> None:
        """Revoke an operator; :class:`InputError` if there is no active one by that name."""
        if not self._store.revoke(name.strip().lower(), self._clock()):
            raise InputError(f"no active operator {name!r}")

    def list(self) -> list[Operator]:
        """Every operator, revoked ones included."""
        return self._store.list()

    def authenticate(self, token: str) -> Operator | None:
        """The active operator a bearer token belongs to, or None."""
        if not token:
            return None
        digest = hash_token(token)
        # Compared as digests, in constant time: how much of a guess matched says nothing.
        if self._bootstrap is not None and hmac.compare_digest(digest, self._bootstrap):
            return Operator(BOOTSTRAP, Role.ADMIN, datetime.min.replace(tzinfo=UTC), BOOTSTRAP)
        # The lookup is by hash: timing can at most reveal a prefix of a SHA-256, not of
        # the token.
        operator = self._store.by_token_hash(digest)
        return operator if operator is not None and operator.active else None
