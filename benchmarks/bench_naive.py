"""The naive way, for comparison: one dramatiq message per recipient, Redis round trips per check.

    python -m benchmarks.bench_naive                   # 3,000 SMS; emulator at 0 and 100 ms; 3 runs
    python -m benchmarks.bench_naive --quick           # 1,000 SMS, 1 run
    python -m benchmarks.bench_naive --sms 5000 --latency-ms 0 --latency-ms 250 --runs 5
    python -m benchmarks.bench_naive --latency-ms 0 --limiter incr   # a cheaper naive limiter

The naive pipeline is written the way dramatiq's documentation suggests: the producer writes
the ledger rows (one set-based ``INSERT … SELECT``, generous to it) and sends one message per
recipient with ``actor.send(…)``; a ``dramatiq`` worker process (``python -m dramatiq``, 8
threads) runs the actor, which per recipient does a Redis ``SET NX`` dedupe claim, a Redis
suppression check, dramatiq's own ``WindowRateLimiter`` on its Redis backend (or, with
``--limiter incr``, one INCR+EXPIRE pipeline), a Jinja render,
``Client.messages.create`` on the official (synchronous) twilio client, and one ledger
``UPDATE`` in PostgreSQL.

Ours is :func:`benchmarks.bench_sender.run_once`: one ``rapid sender`` process with the same
8 threads, and the clock running from the start of expansion to the blast's completion.
Both run on the same subscribers, against the same emulator process, alternating run by run,
once with no provider latency and once with a realistic one. Prints one JSON object;
``ratio`` is our median recipients/s over the naive median. Target: >= 10x.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

#: The naive lane (a dramatiq queue) and actor.
QUEUE = "naive-sms"
ACTOR = "naive_send_sms"
#: The same template as the sender benchmark's blast.
BODY = "Hi {{ first_name }}, watch this clip: https://ex.am/p1"
#: The topic benchmarks.bench_sender expands (seeded here).
TOPIC = "bench-sms"
#: The From pool of benchmarks.harness.fleet_env.
FROM_NUMBERS = ("+15005550001", "+15005550002", "+15005550003", "+15005550004")
STATUS_CALLBACK = "http://127.0.0.1:8000/webhooks/twilio/status"
#: Messages per second the naive limiter allows: the harness's account rate (never binds).
RATE_PER_S = 100_000
#: Threads of both workers: dramatiq's default, and what the sender benchmark uses.
THREADS = 8


def _broker(client: Any, namespace: str) -> RedisBroker:
    """dramatiq's Redis broker with its default middleware (minus the Prometheus exporter)."""
    middleware = [
        m() for m in (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines, Retries)
    ]
    return RedisBroker(client=client, namespace=namespace, middleware=middleware)


def _declare(broker: RedisBroker, fn: Any) -> dramatiq.Actor[Any, Any]:
    return dramatiq.actor(broker=broker, actor_name=ACTOR, queue_name=QUEUE)(fn)


# --- the worker side: `python -m dramatiq benchmarks.bench_naive:worker_broker` ---------------


class NaiveSms:
    """One recipient per message; every check a Redis round trip; one UPDATE per recipient."""

    def __init__(self, environ: dict[str, str]) -> None:
        from dramatiq.rate_limits import WindowRateLimiter
        from dramatiq.rate_limits.backends import RedisBackend
        from jinja2 import Environment

        self.ns = environ["NAIVE_NAMESPACE"]
        self.db_url = environ["NAIVE_DB_URL"].replace("postgresql+psycopg://", "postgresql://")
        self.twilio_url = environ["NAIVE_TWILIO_URL"]
        self.redis = redis.Redis.from_url(environ["NAIVE_REDIS_URL"])
        self.limiter = WindowRateLimiter(
            RedisBackend(client=self.redis), f"{self.ns}:rate:sms", limit=RATE_PER_S, window=1
        )
        self.template = Environment(autoescape=False).from_string(BODY)  # noqa: S701 - SMS text
        self.local = threading.local()
        self.limiter_kind = environ.get("NAIVE_LIMITER", "dramatiq")

    def _rate_limited(self) -> Any:
        """dramatiq's WindowRateLimiter (WATCH/GET/MGET/MULTI/SET/EXEC, retried on conflicts),
        or the cheapest fixed window: INCR + EXPIRE in one pipelined round trip."""
        if self.limiter_kind == "dramatiq":
            return self.limiter.acquire()
        from dramatiq.rate_limits import RateLimitExceeded

        window = f"{self.ns}:rate:sms:{int(time.time())}"
        with self.redis.pipeline(transaction=False) as pipe:
            count, _ = pipe.incr(window).expire(window, 2).execute()
        if count > RATE_PER_S:
            raise RateLimitExceeded(window)
        return contextlib.nullcontext()

    def _twilio(self) -> Any:
        """The official synchronous client, one per worker thread (one HTTP session each)."""
        if not hasattr(self.local, "twilio"):
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            from benchmarks.harness import ACCOUNT_SID, AUTH_TOKEN

            base = self.twilio_url

            class EmulatorHttpClient(TwilioHttpClient):
                """Twilio's documented extension point: send ``*.twilio.com`` here instead."""

                def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
                    parts = urlsplit(url)
                    url = base + parts.path + (f"?{parts.query}" if parts.query else "")
                    return super().request(method, url, *args, **kwargs)

            self.local.twilio = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=EmulatorHttpClient())
        return self.local.twilio

    def _db(self) -> Any:
        if not hasattr(self.local, "db"):
            import psycopg

            self.local.db = psycopg.connect(self.db_url, autocommit=True)
        return self.local.db

    def send(self, blast_id: str, supporter_id: int, phone: str, first_name: str) -> None:
        """The actor body."""
        claim = f"{self.ns}:sent:{blast_id}:{supporter_id}"
        if not self.redis.set(claim, 1, nx=True, ex=86_400):
            return  # a redelivery: already sent
        try:
            if self.redis.sismember(f"{self.ns}:suppressed", phone):
                self._record(blast_id, supporter_id, "suppressed", None, None)
                return
            # Over the limit: RateLimitExceeded, and dramatiq's Retries try again later.
            with self._rate_limited():
                sender = FROM_NUMBERS[zlib.crc32(phone.encode()) % len(FROM_NUMBERS)]
                message = self._twilio().messages.create(
                    to=phone,
                    from_=sender,
                    body=self.template.render(first_name=first_name),
                    status_callback=STATUS_CALLBACK,
                )
        except BaseException:
            self.redis.delete(claim)  # not sent: let the retry claim it again
            raise
        self._record(blast_id, supporter_id, "sent", message.sid, sender)

    def _record(
        self, blast_id: str, supporter_id: int, state: str, sid: str | None, sender: str | None
    ) -> None:
        self._db().execute(
            "UPDATE deliveries SET state = %s, provider_message_id = %s, sender = %s, "
            "sent_at = now(), updated_at = now() "
            "WHERE blast_id = %s AND channel = 'sms' AND supporter_id = %s",
            (state, sid, sender, blast_id, supporter_id),
        )


def worker_broker() -> None:
    """Set up dramatiq's global broker and the actor, for the ``dramatiq`` command."""
    environ = dict(os.environ)
    broker = _broker(redis.Redis.from_url(environ["NAIVE_REDIS_URL"]), environ["NAIVE_NAMESPACE"])
    dramatiq.set_broker(broker)
    naive = NaiveSms(environ)

    def naive_send_sms(blast_id: str, supporter_id: int, phone: str, first_name: str) -> None:
        naive.send(blast_id, supporter_id, phone, first_name)

    _declare(broker, naive_send_sms)


# --- the producer side and the measurement ----------------------------------------------------


def run_naive(
    db_url: str, urls: dict[str, str], redis_url: str, limiter: str = "dramatiq"
) -> dict[str, Any]:
    """One naive blast over the topic: write the ledger, send a message per recipient, wait."""
    import psycopg

    namespace = f"naive{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    env.update(
        NAIVE_NAMESPACE=namespace,
        NAIVE_DB_URL=db_url,
        NAIVE_REDIS_URL=redis_url,
        NAIVE_TWILIO_URL=urls["twilio"],
        NAIVE_LIMITER=limiter,
    )
    client = redis.Redis.from_url(redis_url)
    broker = _broker(client, namespace)

    def naive_send_sms(blast_id: str, supporter_id: int, phone: str, first_name: str) -> None:
        raise AssertionError("runs in the dramatiq worker")

    actor = _declare(broker, naive_send_sms)
    blast_id = f"naive-{uuid.uuid4().hex[:6]}"
    command = [
        sys.executable, "-m", "dramatiq", "benchmarks.bench_naive:worker_broker",
        "--processes", "1", "--threads", str(THREADS), "--queues", QUEUE,
    ]  # fmt: skip
    with (
        tempfile.TemporaryFile("w+") as errors,
        psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as db,
    ):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            while not client.exists(f"{namespace}:__heartbeats__"):
                if proc.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(f"naive worker died:\n{errors.read()[-3000:]}")
                time.sleep(0.05)
            commands_before = int(client.info("stats")["total_commands_processed"])
            cpu_before = _tree_cpu_s(proc.pid)
            started = time.monotonic()
            with db.transaction():
                db.execute(
                    "INSERT INTO blasts (blast_id, topic, status, priority, alert, created_at, "
                    "updated_at) VALUES (%s, %s, 'sending', 'normal', '{}', now(), now())",
                    (blast_id, TOPIC),
                )
                recipients = db.execute(
                    "INSERT INTO deliveries (blast_id, channel, supporter_id, destination, state, "
                    "created_at, updated_at) "
                    "SELECT %s, 'sms', p.id, p.phone, 'pending', now(), now() "
                    "FROM subscriptions s JOIN supporters p ON p.id = s.supporter_id "
                    "WHERE s.topic = %s AND p.sms_opt_in AND p.phone IS NOT NULL "
                    "RETURNING supporter_id, destination",
                    (blast_id, TOPIC),
                ).fetchall()
                names: dict[int, str | None] = dict(
                    db.execute(
                        "SELECT id, first_name FROM supporters WHERE id = ANY(%s)",
                        ([sid for sid, _ in recipients],),
                    ).fetchall()
                )
            for sid, phone in recipients:
                actor.send(blast_id, sid, phone, names[sid] or "")
            enqueued = time.monotonic()
            deadline = started + 900
            while time.monotonic() < deadline:
                (done,) = db.execute(
                    "SELECT count(*) FROM deliveries WHERE blast_id = %s AND state = 'sent'",
                    (blast_id,),
                ).fetchone() or (0,)
                db.commit()
                if done >= len(recipients):
                    break
                time.sleep(0.05)
            else:
                errors.seek(0)
                raise RuntimeError(f"{blast_id} did not finish:\n{errors.read()[-3000:]}")
            finished = time.monotonic()
            cpu_s = _tree_cpu_s(proc.pid) - cpu_before
            commands = int(client.info("stats")["total_commands_processed"]) - commands_before
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    seconds = finished - started
    return {
        "sent": done,
        "seconds": round(seconds, 3),
        "per_s": round(done / seconds, 1),
        "enqueue_s": round(enqueued - started, 2),
        "worker_cpu_s": round(cpu_s, 2),
        "per_cpu_s": round(done / max(cpu_s, 1e-9), 1),
        "redis_commands_per_recipient": round(commands / max(done, 1), 2),
    }


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process and its descendants (dramatiq forks
    its worker processes), as ``bench_sender.process_cpu_s`` counts our sender's."""
    from benchmarks.bench_sender import process_cpu_s

    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += process_cpu_s(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
    return total


def _span(values: list[float]) -> dict[str, float]:
    from benchmarks.harness import median

    return {"median": round(median(values), 1), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    """Per provider latency: alternate our pipeline and the naive one; print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sms", type=int, default=None, help="recipients (default 3,000)")
    parser.add_argument("--runs", type=int, default=None, help="runs of each (default 3)")
    parser.add_argument(
        "--latency-ms", type=int, action="append", help="emulator latency (default 0 and 100)"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 recipients, 1 run")
    parser.add_argument(
        "--limiter",
        choices=["dramatiq", "incr"],
        default="dramatiq",
        help="the naive rate limit: dramatiq's WindowRateLimiter, or one INCR+EXPIRE pipeline",
    )
    parser.add_argument("--pg-url", default=None)
    args = parser.parse_args(argv)
    from benchmarks.bench_sender import run_once
    from benchmarks.harness import DEFAULT_PG_URL, emulator_process, seed_subscribers, throwaway_pg
    from config.logging import configure_logging
    from config.settings import Settings

    configure_logging(Settings(log_format="json", log_level="WARNING"), stream=sys.stderr)
    sms = args.sms or (1_000 if args.quick else 3_000)
    runs = args.runs or (1 if args.quick else 3)
    latencies = args.latency_ms or [0, 100]
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    result: dict[str, Any] = {
        "recipients": sms,
        "runs": runs,
        "threads": THREADS,
        "naive_limiter": args.limiter,
    }
    with throwaway_pg(args.pg_url or DEFAULT_PG_URL) as db_url:
        seed_subscribers(db_url, {TOPIC: sms})
        for latency in latencies:
            ours: list[dict[str, Any]] = []
            naive: list[dict[str, Any]] = []
            with emulator_process(latency_ms=latency) as urls:
                for _ in range(runs):
                    ours.append(run_once(db_url, urls, "sms", THREADS))
                    naive.append(run_naive(db_url, urls, redis_url, args.limiter))
                    print(json.dumps({"latency_ms": latency, "ours": ours[-1], "naive": naive[-1]}),
                          file=sys.stderr)  # fmt: skip
            ours_rate = _span([r["per_s"] for r in ours])
            naive_rate = _span([r["per_s"] for r in naive])
            ours_cpu = _span([r["per_cpu_s"] for r in ours])
            naive_cpu = _span([r["per_cpu_s"] for r in naive])
            result[f"latency_{latency}ms"] = {
                "ours_per_s": ours_rate,
                "naive_per_s": naive_rate,
                "ratio": round(ours_rate["median"] / naive_rate["median"], 1),
                "ratio_min_max": [
                    round(min(r["per_s"] for r in ours) / max(r["per_s"] for r in naive), 1),
                    round(max(r["per_s"] for r in ours) / min(r["per_s"] for r in naive), 1),
                ],
                # Recipients per CPU-second of the sending process(es) alone: what the
                # shared machine's load does not move as much as it moves the rates.
                "ours_per_cpu_s": ours_cpu,
                "naive_per_cpu_s": naive_cpu,
                "cpu_ratio": round(ours_cpu["median"] / naive_cpu["median"], 1),
                "ours": ours,
                "naive": naive,
            }
    result.update(target_ratio=10, load_avg_1m=round(os.getloadavg()[0], 2), cpus=os.cpu_count())
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
