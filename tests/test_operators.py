"""Operators: roles, tokens shown once and stored hashed, revocation, the bootstrap admin.

Unit tests on the in-memory store; the SQL store is held to the same behaviour below, on
SQLite and PostgreSQL, and the CLI end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from messaging.access.operators import (
    BOOTSTRAP,
    ROLE_PERMISSIONS,
    Operator,
    Operators,
    OperatorStore,
    Permission,
    Role,
    allows,
    hash_token,
    parse_role,
)
from messaging.errors import InputError
from messaging.store.memory.operators import MemoryOperatorStore
from tests.factories import store_on_backend

BOOTSTRAP_TOKEN = "bootstrap-token-0123456789abcdef-0123"


def test_roles_are_cumulative_and_match_the_contract() -> None:
    # Contract §11: viewer reads; sender also sends and pauses; approver also approves,
    # rejects, resumes and cancels; admin also manages operators, opt-outs and imports.
    P = Permission
    assert ROLE_PERMISSIONS[Role.VIEWER] == {P.READ}
    assert ROLE_PERMISSIONS[Role.SENDER] == {P.READ, P.SEND, P.PAUSE}
    assert ROLE_PERMISSIONS[Role.APPROVER] == {
        P.READ, P.SEND, P.PAUSE, P.APPROVE, P.REJECT, P.RESUME, P.CANCEL
    }  # fmt: skip
    assert ROLE_PERMISSIONS[Role.ADMIN] == set(Permission)
    assert not allows(Role.SENDER, P.APPROVE)
    assert allows(Role.ADMIN, P.OPERATORS)
    with pytest.raises(InputError, match="viewer, sender, approver, admin"):
        parse_role("root")


def test_a_token_is_returned_once_and_only_its_hash_is_kept() -> None:
    store = MemoryOperatorStore()
    ops = Operators(store)
    # When alice is added as a sender
    alice, token = ops.add("Alice", Role.SENDER, created_by="root")
    # Then her token authenticates her, and the store holds only its hash
    assert alice.name == "alice" and token.startswith("rr_") and len(token) > 40
    found = ops.authenticate(token)
    assert found is not None and found.name == "alice" and found.role is Role.SENDER
    assert token not in repr(store.__dict__)
    assert hash_token(token) in repr(store.__dict__)
    # A near miss or an empty token is nobody
    assert ops.authenticate(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    assert ops.authenticate("") is None


def test_names_are_unique_reserved_names_refused_and_revoked_tokens_dead() -> None:
    ops = Operators(MemoryOperatorStore())
    _op, token = ops.add("bob", Role.APPROVER, created_by="root")
    with pytest.raises(InputError, match="exists"):
        ops.add("bob", Role.VIEWER, created_by="root")
    for reserved in ("bootstrap", "sns", "fleet"):
        with pytest.raises(InputError, match="reserved"):
            ops.add(reserved, Role.VIEWER, created_by="root")
    with pytest.raises(InputError, match="operator name"):
        ops.add("bob smith", Role.VIEWER, created_by="root")
    # When bob is revoked, his token stops working at once, and the name can be reused
    ops.revoke("bob")
    assert ops.authenticate(token) is None
    with pytest.raises(InputError, match="no active operator"):
        ops.revoke("bob")
    _op, fresh = ops.add("bob", Role.VIEWER, created_by="root")
    found = ops.authenticate(fresh)
    assert found is not None and found.role is Role.VIEWER
    assert [(o.name, o.active) for o in ops.list()] == [("bob", True)]


def test_the_bootstrap_token_is_an_admin_named_bootstrap() -> None:
    ops = Operators(MemoryOperatorStore(), bootstrap_token=BOOTSTRAP_TOKEN)
    found = ops.authenticate(BOOTSTRAP_TOKEN)
    assert found is not None and found.name == BOOTSTRAP and found.role is Role.ADMIN
    assert Operators(MemoryOperatorStore()).authenticate(BOOTSTRAP_TOKEN) is None


def test_revocation_time_comes_from_the_clock() -> None:
    at = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    ops = Operators(MemoryOperatorStore(), clock=lambda: at)
    ops.add("carol", Role.ADMIN, created_by="root")
    ops.revoke("carol")
    (carol,) = ops.list()
    assert carol.created_at == at and carol.revoked_at == at and not carol.active
    assert not carol.may(Permission.READ)


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def operator_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[OperatorStore]:
    """The operator store: in memory, on SQLite and on PostgreSQL."""
    from messaging.store.sql.operators import SqlOperatorStore

    yield from store_on_backend(request, tmp_path, MemoryOperatorStore, SqlOperatorStore)


def test_every_operator_store_behaves_the_same(operator_store: OperatorStore) -> None:
    at = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    bob = Operator("bob", Role.SENDER, at, "root")
    # A name is taken once while active; a token hash finds only an active operator
    assert operator_store.add(bob, "h-bob")
    assert not operator_store.add(Operator("bob", Role.ADMIN, at, "root"), "h-other")
    assert operator_store.add(Operator("amy", Role.VIEWER, at, "root"), "h-amy")
    found = operator_store.by_token_hash("h-bob")
    assert found is not None and (found.name, found.role, found.created_at) == ("bob", "sender", at)
    assert operator_store.by_token_hash("h-nobody") is None
    # Revoking ends the token; the name may be given out again with a new token
    assert operator_store.revoke("bob", at) and not operator_store.revoke("bob", at)
    assert operator_store.by_token_hash("h-bob") is None
    assert [(o.name, o.active) for o in operator_store.list()] == [("amy", True), ("bob", False)]
    assert operator_store.add(Operator("bob", Role.ADMIN, at, "amy"), "h-bob-2")
    again = operator_store.by_token_hash("h-bob-2")
    assert again is not None and again.role is Role.ADMIN and again.created_by == "amy"
    assert operator_store.by_token_hash("h-bob") is None
