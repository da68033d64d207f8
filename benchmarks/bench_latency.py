"""Latency-bound figures: the SMS rate one sender holds against a slow provider, and the time
from an alert's publication to its first send.

    python -m benchmarks.bench_latency                 # both, full size (~8 min)
    python -m benchmarks.bench_latency --quick         # smaller, same shape (~1.5 min)
    python -m benchmarks.bench_latency --only rate     # or: --only first-send
    python -m benchmarks.bench_latency --only rate --rate 2000 --processes 2
    python -m benchmarks.bench_latency --only first-send --under-load

**rate**: one real `rapid sender` (``--processes`` processes) against a Twilio emulator that
answers every request after ``--latency-ms`` (200); the account limit is ``--rate``
(``SMS_RATE_ACCOUNT``, 500) and each of the four From numbers may send
``--per-sender-rate`` (the account rate by default, so the account limit is the one that
binds). A blast of ``--recipients`` SMS (normal priority) is expanded here
through the real intake code; the rate is counted at the emulator's receive timestamps
(``received_at``, taken as each request arrives, before the emulator's latency), over the
steady state: the first and the last second of the blast are left out. The limiter paces at
``headroom(rate)`` (96 %: its lateness budget) of the configured rate less its express share
(0.4 % at 500/s: ``messaging/sending/pacing.py``) on purpose, so both
ratios are printed, and ``max_in_any_1s`` must stay at or under the configured rate.

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

``--under-load`` measures the same while the fleet is busy: before the measured alerts, a
blast of ``--load-recipients`` (1,000,000; quick: 100,000) is published (normal priority, its
expansion running while the alerts are measured) and a bulk blast of ``--bulk-recipients``
(200,000; quick: 30,000) is sending, both through the same intake and sender, on an account
rate of ``--load-rate`` (500/s, the rate binding as in production). The load blasts are
canceled at the end; ``load`` in the result says how far each got while measuring.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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
    median,
    moto_server,
    seed_subscribers,
    throwaway_pg,
)
from config.settings import load_settings
from emulators.client import EmulatorClient
from messaging.sending.pacing import schedule_intervals_us
from workers.app import App

#: The account rate of the rate benchmark, in messages per second (the issue's figure).
ACCOUNT_RATE_PER_S = 500
#: Topics of the load blasts of ``--under-load`` (a huge one expanding, a bulk one sending).
BIG_TOPIC, BULK_TOPIC = "bench-big", "bench-bulk"
#: Seconds left out at each end of a blast: the ramp-up and the last, partial batches.
EDGE_S = 1.0
#: How often the emulator is polled while waiting for messages, in seconds. Only detection
#: uses it; every figure comes from the emulator's own timestamps.
POLL_S = 0.01
#: A ``sitecustomize`` that stamps the fleet's requests as they leave (benchmarks/departures).
DEPARTURES_PROBE = Path(__file__).resolve().parent / "departures"


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
    rate: float,
    per_sender: float,
    threads: int,
    processes: int,
    priority: str,
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    env = fleet_env(
        db_url,
        urls,
        prefix,
        SMS_RATE_ACCOUNT=str(rate),
        SMS_RATE_PER_SENDER=str(per_sender),
    )
    # The fleet's processes stamp each request as it leaves (benchmarks/departures).
    departures_dir = Path(tempfile.mkdtemp(prefix="departures-"))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(DEPARTURES_PROBE), env.get("PYTHONPATH", "")) if p
    )
    env["BENCH_DEPARTURES_DIR"] = str(departures_dir)
    token = uuid.uuid4().hex[:10]
    inbox = Inbox(urls["twilio"])
    sender: tuple[str, ...] = ("sender", "--threads", str(threads), "--channels", "sms")
    sender += ("--processes", str(processes))
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
                    # The emulator keeps 1000 messages: read well within that at 2,000/s.
                    time.sleep(0.1)
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
    # A run shorter than four edges (--quick's 3,000 at 2,000/s: 1.6 s) keeps its middle half.
    edge_s = min(EDGE_S, (times[-1] - times[0]) / 4)
    start, end = times[0] + edge_s, times[-1] - edge_s
    steady = sum(start <= t <= end for t in times)
    per_s = steady / (end - start)
    departures = sorted(t for f in departures_dir.glob("*.json") for t in json.loads(f.read_text()))
    shutil.rmtree(departures_dir, ignore_errors=True)
    return {
        "sent": len(times),
        "seconds": round(times[-1] - times[0], 2),
        "overall_per_s": round((len(times) - 1) / (times[-1] - times[0]), 1),
        "steady_per_s": round(per_s, 1),
        "max_in_any_1s": max_in_window(times),
        # The same, as our processes sent them (requests stamped: at least every message).
        "departures_stamped": len(departures),
        "max_departures_in_any_1s": max_in_window(departures),
    }


def bench_rate(args: argparse.Namespace) -> dict[str, Any]:
    rate = args.rate
    paced = 1e6 / schedule_intervals_us(rate, express_share=True)[0]  # the main schedule's pace
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
                rate=rate,
                per_sender=args.per_sender_rate or rate,
                threads=args.threads,
                processes=args.processes,
                priority=args.rate_priority,
            )
            for _ in range(args.runs)
        ]
    rates = [r["steady_per_s"] for r in runs]
    return {
        "latency_ms": args.latency_ms,
        "recipients": args.recipients,
        "threads": args.threads,
        "sender_processes": args.processes,
        "priority": args.rate_priority,
        "sms_rate_account": rate,
        "sms_rate_per_sender": args.per_sender_rate or rate,
        "from_numbers": 4,
        "paced_per_s": round(paced, 1),
        "steady_state": (
            f"emulator received_at, first and last {EDGE_S:g} s excluded"
            " (a quarter of the run each if it is shorter than 4 s)"
        ),
        "achieved_per_s": spread(rates),
        "achieved_over_configured": spread([r / rate for r in rates], 3),
        "achieved_over_paced": spread([r / paced for r in rates], 3),
        "max_in_any_1s": max(r["max_in_any_1s"] for r in runs),
        "max_departures_in_any_1s": max(r["max_departures_in_any_1s"] for r in runs),
        "target_over_configured": 0.95 if rate <= ACCOUNT_RATE_PER_S else 0.9,
        "runs": runs,
    }


# --- item 4: alert to first send --------------------------------------------------------


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


def publish_load(app: App, arns: dict[str, str]) -> dict[str, str]:
    """Publish the load of ``--under-load``: a bulk blast, sending once its first page is
    expanded, then the huge one; returns their alert ids by topic."""
    ids = {}
    for topic, priority in ((BULK_TOPIC, "bulk"), (BIG_TOPIC, "normal")):
        alert_id = f"load-{topic}-{uuid.uuid4().hex[:6]}"
        alert = {"alert_id": alert_id, "priority": priority, "sms": {"body": "Hi {{ first_name }}"}}
        app.sns.publish(TopicArn=arns[topic], Message=json.dumps(alert))
        ids[topic] = alert_id
        deadline = time.monotonic() + 120
        while (app.blasts.get(alert_id) or _NONE).status not in ("expanding", "sending"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"load blast {alert_id} did not start")
            time.sleep(0.05)
    return ids


class _NoBlast:
    status = None


_NONE = _NoBlast()


def load_state(app: App, ids: dict[str, str]) -> dict[str, Any]:
    """How far the load blasts have got: expanding still, and SMS sent."""
    state = {}
    for topic, alert_id in ids.items():
        blast = app.blasts.get(alert_id)
        counts = app.blasts.state_counts([alert_id]).get(alert_id, {})
        state[topic] = {
            "status": blast.status if blast is not None else None,
            "expanding": blast is not None and blast.expanded_at is None,
            "sent": counts.get("sms", {}).get("sent", 0),
        }
    return state


def bench_first_send(args: argparse.Namespace) -> dict[str, Any]:
    topic, prefix = "bench-first", f"bench{uuid.uuid4().hex[:6]}"
    priorities = tuple(args.priorities.split(","))
    rng = random.Random(args.seed)
    firsts: dict[str, list[list[float]]] = {p: [[] for _ in range(args.runs)] for p in priorities}
    intakes: dict[str, list[float]] = {p: [] for p in priorities}
    queued: dict[str, list[float]] = {p: [] for p in priorities}
    #: Publish → first send of the alerts published while the huge blast was still expanding.
    while_expanding: dict[str, list[float]] = {p: [] for p in priorities}
    topics = {topic: args.subscribers}
    load_env = {}
    if args.under_load:
        topics |= {BIG_TOPIC: args.load_recipients, BULK_TOPIC: args.bulk_recipients}
        load_env = {"SMS_RATE_ACCOUNT": str(args.load_rate), "SMS_RATE_PER_SENDER": "100000"}
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
            **load_env,
        )
        subprocess.run(
            [sys.executable, "-m", "workers", "provision"]
            + [arg for t in topics for arg in ("--topic", t)],
            env=env,
            check=True,
            capture_output=True,
        )
        seed_subscribers(db_url, topics)
        intake = ("intake",)  # the production long poll (20 s): moto wakes it on arrival
        sender = ("sender", "--threads", str(args.threads), "--channels", "sms")
        inbox = Inbox(urls["twilio"])
        load: dict[str, Any] = {}
        try:
            with fleet(env, Path(logs), intake, sender) as app:
                arn = _topic_arn(app, topic)
                for priority in priorities:
                    for _ in range(args.warmup):
                        publish_and_time(app.sns, arn, inbox, app, priority, args.subscribers)
                        time.sleep(args.gap)
                if args.under_load:
                    ids = publish_load(app, {t: _topic_arn(app, t) for t in topics if t != topic})
                    load["at_start"] = load_state(app, ids)
                for run in range(args.runs):
                    for _ in range(args.alerts):
                        for priority in priorities:
                            expanding = (
                                args.under_load
                                and (app.blasts.get(ids[BIG_TOPIC]) or _NONE).status == "expanding"
                            )
                            first_ms, intake_ms, queued_ms = publish_and_time(
                                app.sns, arn, inbox, app, priority, args.subscribers
                            )
                            firsts[priority][run].append(first_ms)
                            intakes[priority].append(intake_ms)
                            queued[priority].append(queued_ms)
                            if expanding:
                                while_expanding[priority].append(first_ms)
                            time.sleep(args.gap * rng.uniform(1.0, 2.0))
                if args.under_load:
                    load["at_end"] = load_state(app, ids)
        finally:
            inbox.close()
    result: dict[str, Any] = {
        "subscribers": args.subscribers,
        "alerts_per_run": args.alerts,
        "runs_count": args.runs,
        "gap_s": [args.gap, 2 * args.gap],
        "targets_ms": {"p50": 100, "p99": 250},
    }
    if args.under_load:
        result["load"] = {
            "huge_blast_recipients": args.load_recipients,
            "bulk_blast_recipients": args.bulk_recipients,
            "sms_rate_account": args.load_rate,
            **load,
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
        if while_expanding[priority]:
            result[priority]["while_huge_blast_expanding"] = {
                "alerts": len(while_expanding[priority]),
                **latency_figures(while_expanding[priority]),
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
        "--rate", type=float, default=ACCOUNT_RATE_PER_S, help="SMS_RATE_ACCOUNT, msg/s"
    )
    rate.add_argument(
        "--per-sender-rate",
        type=float,
        help="SMS_RATE_PER_SENDER [the account rate]; a quarter of it makes the four "
        "numbers' sum equal the account's",
    )
    rate.add_argument("--processes", type=int, default=1, help="`rapid sender --processes`")
    rate.add_argument("--rate-priority", default="normal", help="the blast's priority")
    first = parser.add_argument_group("first-send")
    first.add_argument("--alerts", type=int, help="measured alerts per run [50; quick: 20]")
    first.add_argument("--warmup", type=int, default=3, help="unmeasured alerts per priority")
    first.add_argument("--subscribers", type=int, default=20)
    first.add_argument("--gap", type=float, default=0.5, help="pause after each alert, s (x1-2)")
    first.add_argument("--priorities", default="urgent,normal")
    first.add_argument("--seed", type=int, default=1)
    first.add_argument(
        "--under-load",
        action="store_true",
        help="while a huge blast expands and a bulk blast sends (see the module's docstring)",
    )
    first.add_argument(
        "--load-recipients", type=int, help="the huge blast [1,000,000; quick: 100,000]"
    )
    first.add_argument(
        "--bulk-recipients", type=int, help="the bulk blast [200,000; quick: 30,000]"
    )
    first.add_argument("--load-rate", type=float, default=500, help="SMS_RATE_ACCOUNT under load")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.recipients = args.recipients or (3_000 if args.quick else 10_000)
    args.alerts = args.alerts or (20 if args.quick else 50)
    args.load_recipients = args.load_recipients or (100_000 if args.quick else 1_000_000)
    args.bulk_recipients = args.bulk_recipients or (30_000 if args.quick else 200_000)
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
