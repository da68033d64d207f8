"""Latency-bound figures: the SMS rate one sender holds against a slow provider, and the time
from an alert's publication to its first send.

    python -m benchmarks.bench_latency                 # both, full size (~8 min)
    python -m benchmarks.bench_latency --quick         # smaller, same shape (~1.5 min)
    python -m benchmarks.bench_latency --only rate     # or: --only first-send

**rate**: one real `rapid sender` process against a Twilio emulator that answers every
request after ``--latency-ms`` (200); the account limit is ``SMS_RATE_ACCOUNT=500`` and each
of the four From numbers may send ``--per-sender-rate`` (500 by default, so the account limit
is the one that binds). A blast of ``--recipients`` SMS (normal priority) is expanded here
through the real intake code; the rate is counted at the emulator's receive timestamps
(``received_at``, taken after its latency: a constant shift), over the steady state: the
first and the last second of the blast are left out. The limiter paces at
``RATE_HEADROOM`` (92 %) of the configured rate on purpose, so both ratios are printed.

**first_send**: a moto server (SNS + SQS), ``rapid provision``, and real `rapid intake` and
`rapid sender` processes against a zero-latency emulator. Warm-up alerts first; then each
alert is published with boto3 ``sns.publish`` to a 20-subscriber topic, one after another
(the next one only after the previous blast's messages have all landed, plus a pause of
``--gap`` seconds with jitter, so the workers are idle, as between real alerts). Latency is
from ``time.time()`` just before ``publish`` to the emulator's ``received_at`` of the first
message carrying the alert's unique token. Two stamps of the intake split it up:
``blast_row_ms`` (publish → the intake has written the blast row) and ``expanded_ms``
(publish → expansion finished, its send work already on the lane). Per priority, per run:
p50, p99, min, max; then the median and min–max of those over the runs, and the percentiles
of all alerts pooled.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    DEFAULT_PG_URL,
    emulator_process,
    fleet_env,
    free_port,
    median,
    seed_subscribers,
    throwaway_pg,
)
from config.settings import load_settings
from emulators.client import EmulatorClient
from messaging.pacing import RATE_HEADROOM
from workers.app import App

#: The account rate of the rate benchmark, in messages per second (the issue's figure).
ACCOUNT_RATE_PER_S = 500
#: Seconds left out at each end of a blast: the ramp-up and the last, partial batches.
EDGE_S = 1.0
#: How often the emulator is polled while waiting for messages, in seconds. Only detection
#: uses it; every figure comes from the emulator's own timestamps.
POLL_S = 0.01


# --- shared -----------------------------------------------------------------------------


@contextmanager
def fleet(env: dict[str, str], log_dir: Path, *commands: tuple[str, ...]) -> Iterator[App]:
    """``rapid`` processes started with ``env`` (logs in ``log_dir``); yields an App on the
    same settings. Stopped with SIGTERM, and the prefix's Redis keys deleted, at the end."""
    app = App(load_settings(env))
    procs = []
    try:
        for args in commands:
            log = (log_dir / f"{args[0]}.log").open("w")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "workers", *args],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        # Both sender workers (urgent lanes, other lanes) register a heartbeat once consuming.
        heartbeats = f"{app.settings.prefix}-dramatiq:__heartbeats__"
        deadline = time.monotonic() + 60
        while app.redis.zcard(heartbeats) < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("the fleet did not start:\n" + _logs(log_dir))
            time.sleep(0.05)
        yield app
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=40)
        keys = app.redis.keys(f"{app.settings.prefix}*")
        if keys:
            app.redis.delete(*keys)
        app.close()


def _logs(log_dir: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(log_dir.glob("*.log")))


class Inbox:
    """The Twilio emulator's accepted messages, paged with ``since`` (the emulator keeps only
    the last 1000, so a slow reader would lose some: that is an error, not a smaller count)."""

    def __init__(self, twilio_url: str) -> None:
        self.client = EmulatorClient(twilio_url)
        self._since = self.client.messages()[1]

    def new(self) -> list[dict[str, Any]]:
        """Messages accepted since the last call."""
        page, following = self.client.messages(self._since)
        if page and page[0]["seq"] != self._since:
            raise RuntimeError(f"messages {self._since}..{page[0]['seq'] - 1} were dropped")
        self._since = following
        return page

    def close(self) -> None:
        self.client.close()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): with 50 values, p99 is the largest."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def spread(values: list[float], digits: int = 1) -> dict[str, float]:
    """Median and min–max of several runs' figures."""
    return {
        "median": round(median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


# --- item 3: latency-bound concurrency --------------------------------------------------


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most timestamps in any ``window_s`` window (contract §9.4 reads this per second)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def rate_run(
    db_url: str,
    urls: dict[str, str],
    log_dir: Path,
    *,
    n: int,
    per_sender: float,
    threads: int,
    priority: str,
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    env = fleet_env(
        db_url,
        urls,
        prefix,
        SMS_RATE_ACCOUNT=str(ACCOUNT_RATE_PER_S),
        SMS_RATE_PER_SENDER=str(per_sender),
    )
    token = uuid.uuid4().hex[:10]
    inbox = Inbox(urls["twilio"])
    sender = ("sender", "--threads", str(threads), "--channels", "sms")
    try:
        with fleet(env, log_dir, sender) as app:
            alert = {
                "alert_id": f"rate-{token}",
                "topic": "bench-rate",
                "priority": priority,
                "sms": {"body": f"{token} Hi {{{{ first_name }}}}, watch: https://ex.am/p1"},
            }
            # Expansion runs beside the reading: sending starts after its first page, and
            # the emulator keeps only the last 1000 messages.
            with ThreadPoolExecutor(1) as pool:
                expansion = pool.submit(app.intake.handle, json.dumps(alert))
                times: list[float] = []
                last_progress = time.monotonic()
                while len(times) < n and time.monotonic() - last_progress < 30:
                    time.sleep(0.25)
                    mine = [m["received_at"] for m in inbox.new() if token in m["body"]]
                    if mine:
                        times += mine
                        last_progress = time.monotonic()
                expansion.result()
    finally:
        inbox.close()
    times.sort()
    if len(times) < n:
        raise RuntimeError(f"only {len(times)} of {n} messages arrived:\n{_logs(log_dir)}")
    start, end = times[0] + EDGE_S, times[-1] - EDGE_S
    steady = sum(start <= t <= end for t in times)
    per_s = steady / (end - start)
    return {
        "sent": len(times),
        "seconds": round(times[-1] - times[0], 2),
        "overall_per_s": round((len(times) - 1) / (times[-1] - times[0]), 1),
        "steady_per_s": round(per_s, 1),
        "max_in_any_1s": max_in_window(times),
    }


def bench_rate(args: argparse.Namespace) -> dict[str, Any]:
    paced = ACCOUNT_RATE_PER_S * RATE_HEADROOM
    with (
        throwaway_pg(args.pg_url) as db_url,
        emulator_process(latency_ms=args.latency_ms) as urls,
        tempfile.TemporaryDirectory() as logs,
    ):
        seed_subscribers(db_url, {"bench-rate": args.recipients})
        runs = [
            rate_run(
                db_url,
                urls,
                Path(logs),
                n=args.recipients,
                per_sender=args.per_sender_rate,
                threads=args.threads,
                priority=args.rate_priority,
            )
            for _ in range(args.runs)
        ]
    rates = [r["steady_per_s"] for r in runs]
    return {
        "latency_ms": args.latency_ms,
        "recipients": args.recipients,
        "threads": args.threads,
        "priority": args.rate_priority,
        "sms_rate_account": ACCOUNT_RATE_PER_S,
        "sms_rate_per_sender": args.per_sender_rate,
        "from_numbers": 4,
        "paced_per_s": round(paced, 1),
        "steady_state": f"emulator received_at, first and last {EDGE_S:g} s excluded",
        "achieved_per_s": spread(rates),
        "achieved_over_configured": spread([r / ACCOUNT_RATE_PER_S for r in rates], 3),
        "achieved_over_paced": spread([r / paced for r in rates], 3),
        "target_over_configured": 0.9,
        "runs": runs,
    }


# --- item 4: alert to first send --------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[str]:
    """A real moto server (SNS + SQS over HTTP) on a free loopback port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def publish_and_time(
    sns: Any, arn: str, inbox: Inbox, app: App, priority: str, subscribers: int
) -> tuple[float, float, float]:
    """Publish one alert; publish → (first send, blast row written, expansion finished and
    its work queued), in milliseconds."""
    token = uuid.uuid4().hex[:12]
    alert_id = f"lat-{token}"
    alert = {
        "alert_id": alert_id,
        "priority": priority,
        "sms": {"body": f"{token} Hi {{{{ first_name }}}}"},
    }
    message = json.dumps(alert)
    published = time.time()
    sns.publish(TopicArn=arn, Message=message)
    first: float | None = None
    landed = 0
    deadline = time.monotonic() + 30
    while landed < subscribers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"alert {token}: {landed} of {subscribers} messages in 30 s")
        time.sleep(POLL_S)
        mine = [m["received_at"] for m in inbox.new() if token in m["body"]]
        if mine:
            first = min(mine) if first is None else min(first, *mine)
            landed += len(mine)
    # The sends may all land before the intake has stamped the expansion's end.
    blast = app.blasts.get(alert_id)
    while blast is None or blast.expanded_at is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"alert {token}: expansion not finished in 30 s")
        time.sleep(POLL_S)
        blast = app.blasts.get(alert_id)
    assert first is not None and blast.expanded_at is not None
    return (
        (first - published) * 1000,
        (blast.created_at.timestamp() - published) * 1000,
        (blast.expanded_at.timestamp() - published) * 1000,
    )


def latency_figures(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 50), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "min_ms": round(min(values), 1),
        "max_ms": round(max(values), 1),
    }


def bench_first_send(args: argparse.Namespace) -> dict[str, Any]:
    topic, prefix = "bench-first", f"bench{uuid.uuid4().hex[:6]}"
    priorities = tuple(args.priorities.split(","))
    rng = random.Random(args.seed)
    firsts: dict[str, list[list[float]]] = {p: [[] for _ in range(args.runs)] for p in priorities}
    intakes: dict[str, list[float]] = {p: [] for p in priorities}
    queued: dict[str, list[float]] = {p: [] for p in priorities}
    with (
        moto_server() as moto_url,
        throwaway_pg(args.pg_url) as db_url,
        emulator_process() as urls,
        tempfile.TemporaryDirectory() as logs,
    ):
        env = fleet_env(
            db_url,
            urls,
            prefix,
            AWS_ENDPOINT_URL=moto_url,
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto
        )
        subprocess.run(
            [sys.executable, "-m", "workers", "provision", "--topic", topic],
            env=env,
            check=True,
            capture_output=True,
        )
        seed_subscribers(db_url, {topic: args.subscribers})
        intake = ("intake",)  # the production long poll (20 s): moto wakes it on arrival
        sender = ("sender", "--threads", str(args.threads), "--channels", "sms")
        inbox = Inbox(urls["twilio"])
        try:
            with fleet(env, Path(logs), intake, sender) as app:
                arn = _topic_arn(app, topic)
                for priority in priorities:
                    for _ in range(args.warmup):
                        publish_and_time(app.sns, arn, inbox, app, priority, args.subscribers)
                        time.sleep(args.gap)
                for run in range(args.runs):
                    for _ in range(args.alerts):
                        for priority in priorities:
                            first_ms, intake_ms, queued_ms = publish_and_time(
                                app.sns, arn, inbox, app, priority, args.subscribers
                            )
                            firsts[priority][run].append(first_ms)
                            intakes[priority].append(intake_ms)
                            queued[priority].append(queued_ms)
                            time.sleep(args.gap * rng.uniform(1.0, 2.0))
        finally:
            inbox.close()
    result: dict[str, Any] = {
        "subscribers": args.subscribers,
        "alerts_per_run": args.alerts,
        "runs_count": args.runs,
        "gap_s": [args.gap, 2 * args.gap],
        "targets_ms": {"p50": 250, "p99": 1000},
    }
    for priority in priorities:
        per_run = [latency_figures(run) for run in firsts[priority]]
        pooled = [v for run in firsts[priority] for v in run]
        result[priority] = {
            "p50_ms": spread([r["p50_ms"] for r in per_run]),
            "p99_ms": spread([r["p99_ms"] for r in per_run]),
            "pooled": {"alerts": len(pooled), **latency_figures(pooled)},
            "blast_row_ms": latency_figures(intakes[priority]),
            "expanded_ms": latency_figures(queued[priority]),
            "runs": per_run,
        }
    return result


def _topic_arn(app: App, topic: str) -> str:
    suffix = f":{app.settings.prefix}-alert-{topic}"
    arns = [t["TopicArn"] for t in app.sns.list_topics()["Topics"]]
    return next(a for a in arns if a.endswith(suffix))


# --- command line -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same shape")
    parser.add_argument("--only", choices=("rate", "first-send"))
    parser.add_argument("--runs", type=int, help="runs of each item [3; quick: 1]")
    parser.add_argument("--threads", type=int, default=8, help="sender threads")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    rate = parser.add_argument_group("rate")
    rate.add_argument("--recipients", type=int, help="SMS per blast [10,000; quick: 3,000]")
    rate.add_argument("--latency-ms", type=int, default=200, help="emulator latency")
    rate.add_argument(
        "--per-sender-rate",
        type=float,
        default=ACCOUNT_RATE_PER_S,
        help="SMS_RATE_PER_SENDER; 125 makes the four numbers' sum equal the account's",
    )
    rate.add_argument("--rate-priority", default="normal", help="the blast's priority")
    first = parser.add_argument_group("first-send")
    first.add_argument("--alerts", type=int, help="measured alerts per run [50; quick: 20]")
    first.add_argument("--warmup", type=int, default=3, help="unmeasured alerts per priority")
    first.add_argument("--subscribers", type=int, default=20)
    first.add_argument("--gap", type=float, default=0.5, help="pause after each alert, s (x1-2)")
    first.add_argument("--priorities", default="urgent,normal")
    first.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.recipients = args.recipients or (3_000 if args.quick else 10_000)
    args.alerts = args.alerts or (20 if args.quick else 50)
    # Logs to stderr, warnings only: stdout carries the JSON result.
    from config.logging import configure_logging
    from config.settings import Settings

    configure_logging(Settings(log_format="json", log_level="WARNING"), stream=sys.stderr)
    results: dict[str, Any] = {}
    if args.only in (None, "rate"):
        results["rate"] = bench_rate(args)
    if args.only in (None, "first-send"):
        results["first_send"] = bench_first_send(args)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
