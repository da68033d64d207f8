"""Small helpers to put supporters and blasts in a test database directly."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from sqlalchemy import Engine

from config.names import Names
from emulators.server import Emulator
from messaging.memory import InMemoryBlastControl, InMemoryRateLimiter, InMemorySendQueue
from messaging.ports import BlastControl, SupporterRow
from messaging.providers.twilio_sms import TwilioSms
from messaging.sending.common import SendContext
from messaging.sending.sms import SmsConfig
from messaging.store import Stores
from messaging.store.schema import deliveries, subscriptions, supporters
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.ledger import SqlLedger
from messaging.store.sql.suppressions import SqlSuppressionList
from tests.conftest import REDIS_TEST_URL

T = TypeVar("T")

#: The number the tests' Twilio account sends from (one of Twilio's magic test numbers).
TEST_FROM_NUMBER = "+15005550006"


def sms_config(rate_per_s: float = 1000, *, org_name: str = "Acme", **options: Any) -> SmsConfig:
    """SMS settings of a test: the one test number, ``rate_per_s`` per sender and account."""
    return SmsConfig(
        org_name=org_name,
        from_numbers=(TEST_FROM_NUMBER,),
        rate_per_sender_per_s=rate_per_s,
        rate_account_per_s=rate_per_s,
        **options,
    )


def emulated_twilio_fixture(account_sid: str, auth_token: str) -> Any:
    """A test module's ``twilio`` fixture: our adapter on the Twilio emulator, reset first
    (no faults, nothing recorded). Use as ``twilio = emulated_twilio_fixture(SID, TOKEN)``."""

    @pytest.fixture
    def twilio(twilio_emulator: Emulator) -> Iterator[TwilioSms]:
        twilio_emulator.reset()
        sms = TwilioSms(account_sid, auth_token, base_url=twilio_emulator.url)
        yield sms
        sms.close()

    return twilio


def fresh_emulator_fixture(emulator_fixture: str) -> Any:
    """A fixture giving the module's emulator (``"twilio_emulator"``, ``"sendgrid_emulator"``)
    reset: no faults, nothing recorded. Use as ``twilio = fresh_emulator_fixture(...)``."""

    @pytest.fixture
    def fresh(request: pytest.FixtureRequest) -> Emulator:
        emulator: Emulator = request.getfixturevalue(emulator_fixture)
        emulator.reset()
        return emulator

    return fresh


def live_redis() -> redis.Redis:
    """A client of the tests' Redis; the test fails (never skips) when it does not answer."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not answering at {REDIS_TEST_URL}: {exc}", pytrace=False)
    return client


def add_supporters(
    engine: Engine, people: Iterable[dict[str, Any]], topic: str | None = None
) -> list[int]:
    """Insert supporters (defaults: opted in to both channels); subscribe them to ``topic``."""
    now = datetime.now(UTC)
    ids = []
    with engine.begin() as conn:
        for i, person in enumerate(people):
            row = {
                "external_id": f"ext-{i}-{person.get('phone') or person.get('email')}",
                "first_name": f"Supporter{i}",
                "sms_opt_in": True,
                "email_opt_in": True,
                "created_at": now,
                "updated_at": now,
                **person,
            }
            sid = conn.execute(
                supporters.insert().values(**row).returning(supporters.c.id)
            ).scalar_one()
            ids.append(int(sid))
            if topic:
                conn.execute(
                    subscriptions.insert().values(topic=topic, supporter_id=sid, created_at=now)
                )
    return ids


def add_delivery(
    engine: Engine,
    blast_id: str,
    supporter_id: int,
    destination: str,
    *,
    state: str = "sent",
    channel: str = "sms",
    **columns: Any,
) -> None:
    """One ledger row, as a sender would have left it: written now, and ``sent_at`` now if it
    is ``sent``; ``columns`` override any of that or add more (``provider_message_id``)."""
    now = datetime.now(UTC)
    row = {
        "blast_id": blast_id,
        "channel": channel,
        "supporter_id": supporter_id,
        "destination": destination,
        "state": state,
        "created_at": now,
        "updated_at": now,
        "sent_at": now if state == "sent" else None,
        **columns,
    }
    with engine.begin() as conn:
        conn.execute(deliveries.insert().values(**row))


def send_context(
    engine: Engine, *, control: BlastControl | None = None, prefix: str = "t"
) -> tuple[SendContext, InMemorySendQueue]:
    """Senders' context on the real ledger, with in-memory queue, limiter and controls."""
    queue = InMemorySendQueue()
    ctx = SendContext(
        SqlLedger(engine),
        SqlBlastStore(engine),
        SqlSuppressionList(engine),
        InMemoryRateLimiter(),
        queue,
        control or InMemoryBlastControl(),
        Names(prefix),
    )
    return ctx, queue


def migrated_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """A migrated engine for a per-backend fixture's "sqlite" or "postgresql" param (the
    caller disposes of it)."""
    from messaging.store.db import create_db_engine, migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rapid.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = create_db_engine(url)
    migrate(engine)
    return engine


def store_on_backend(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    memory: Callable[[], T],
    sql: Callable[[Engine], T],
) -> Iterator[T]:
    """A per-backend fixture's store (``yield from`` it): ``memory()`` for the "memory" param,
    else ``sql(engine)`` on a migrated database, disposed of afterwards."""
    if request.param == "memory":
        yield memory()
        return
    engine = migrated_engine(request, tmp_path)
    yield sql(engine)
    engine.dispose()


def write_texters(stores: Stores, n: int, topic: str = "t") -> None:
    """``n`` supporters opted in to SMS, subscribed to ``topic``, with distinct phones."""
    rows = [
        SupporterRow(f"p{i}", phone=f"+1412{2000000 + i:07d}", sms_opt_in=True, topics=(topic,))
        for i in range(n)
    ]
    stores.supporters.write_batch(rows, frozenset({"phone", "sms_opt_in", "topics"}))
