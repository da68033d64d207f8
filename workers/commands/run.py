"""The long-running processes: intake, sender, scheduler."""

from __future__ import annotations

import gc
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import structlog

from workers.app import App

if TYPE_CHECKING:
    from messaging.blasts.scheduled import ScheduledReleases
    from messaging.ports import BlastRecord
    from queues.leader import Leadership

pass_app = click.make_pass_decorator(App)
log = structlog.get_logger(__name__)

#: How long a stopping sender waits for in-flight batches (contract §9.6: exit within 30 s).
SENDER_DRAIN_MS = 25_000
#: Longest wait of an idle lane's consumer, by priority. An enqueue wakes it at once
#: (``queues/wake.py``: it blocks on the lane's wake list), so this bounds only work that
#: arrives without a token (a dead worker's units put back, a process of an older release)
#: and what an idle lane costs: one blocked call per wait. Before the wake list, dramatiq
#: polled with a backoff up to this, and a new alert waited half of it on average (~50 ms
#: of a ~110 ms publish-to-first-send at 100 ms, at ~13 polls a second per idle lane).
POLL_MS = {"urgent": 500, "normal": 500, "bulk": 1000}
#: Seconds between a healthy sender's heartbeats (``--heartbeat-file``); the instance's
#: health check allows several missed ones.
HEARTBEAT_S = 5.0


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop`` (the process then finishes or returns its work)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("process.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def queue_urls(app: App) -> tuple[str, str]:
    """The intake queue and its DLQ (provisioning must have run)."""
    from messaging.errors import ServiceUnavailableError

    try:
        intake = app.sqs.get_queue_url(QueueName=app.names.intake_queue)["QueueUrl"]
        dlq = app.sqs.get_queue_url(QueueName=app.names.intake_dlq)["QueueUrl"]
    except app.sqs.exceptions.QueueDoesNotExist:
        raise ServiceUnavailableError(
            f"queue {app.names.intake_queue} does not exist: run `rapid provision`"
        ) from None
    return str(intake), str(dlq)


#: Alerts one intake process handles at once. An alert's handling mostly waits on the
#: database (~30 round trips for a small blast) and alerts short of their first page go
#: before other alerts' later pages (``messaging/blasts/first_pages.py``), so many threads
#: overlap well: with 4, fifty alerts published together took ~7 s to reach their first
#: pages (issue #21's target: every blast's first send within 2 s).
INTAKE_CONCURRENCY = 64
#: Database connections of an intake process: its threads take turns on them. Few, so a
#: burst of alerts leaves the senders' claims and writes their share of the database (with
#: 30, fifty alerts at once stalled a sending blast for seconds on a 2-core host).
INTAKE_DB_CONNECTIONS = 6


def run_intake(
    app: App,
    stop: threading.Event,
    *,
    wait_time_s: int = 20,
    concurrency: int = INTAKE_CONCURRENCY,
) -> None:
    """Consume the intake queue until ``stop`` is set."""
    from messaging.store.db import check_connection
    from queues.sqs_consumer import SqsConsumer

    # Handler threads, and their expansions' helper threads at times, share the pool.
    app.db_connections_max = min(concurrency, INTAKE_DB_CONNECTIONS)
    check_connection(app.engine)
    intake_url, dlq_url = queue_urls(app)
    consumer = SqsConsumer(
        app.sqs, intake_url, dlq_url, app.intake.handle, wait_time_s=wait_time_s, stop=stop
    )
    consumer.run(concurrency=concurrency)


@click.command()
@click.option("--wait-time", default=20, show_default=True, help="Long-poll seconds (1-20).")
@click.option(
    "--concurrency",
    default=INTAKE_CONCURRENCY,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Alerts handled at once (a big expansion never holds up an urgent alert).",
)
@pass_app
def intake(app: App, wait_time: int, concurrency: int) -> None:
    """The intake worker: alert queue → blast → ledger → send work."""
    stop = threading.Event()
    stop_on_signals(stop)
    run_intake(app, stop, wait_time_s=max(1, min(20, wait_time)), concurrency=concurrency)


def run_sender(
    app: App,
    stop: threading.Event,
    *,
    threads: int,
    channels: tuple[str, ...],
    heartbeat_file: Path | None = None,
) -> None:
    """Run dramatiq worker threads on the send lanes of ``channels`` until ``stop`` is set.

    With ``heartbeat_file``, its mtime is bumped every ``HEARTBEAT_S`` while Redis answers and
    every worker's consumers are running: what the instance's health check reads.
    """
    import dramatiq

    from messaging.store.db import check_connection

    check_connection(app.engine)
    app.redis.ping()
    from queues.lanes import Lanes, make_broker

    # Each priority gets a worker (and broker connection) of its own: an urgent batch never
    # waits for a thread that is pacing a bulk batch, and each polls at its own pace.
    by_priority = {
        "urgent": Lanes(make_broker(app.redis, app.names)),
        "normal": app.lanes,
        "bulk": Lanes(make_broker(app.redis, app.names)),
    }
    for channel, make in (("sms", app.sms_sender), ("email", app.email_sender)):
        if channel in channels:
            process = make().process
            for priority_lanes in by_priority.values():
                priority_lanes.handle(channel, process)
    workers = [
        dramatiq.Worker(
            priority_lanes.broker,
            worker_threads=threads if priority == "normal" else max(2, threads // 2),
            queues=priority_lanes.queue_names(channels, (priority,)),
            worker_timeout=POLL_MS[priority],
        )
        for priority, priority_lanes in by_priority.items()
    ]
    # What start-up built (modules, clients, senders) lives as long as the process: frozen
    # out of the collector's sight, each full collection (one every few email batches)
    # stops re-scanning it, ~10 % of an email sender's CPU.
    gc.collect()
    gc.freeze()
    for worker in workers:
        worker.start()
    log.info("sender.started", threads=threads, channels=channels)
    beat_at = 0.0
    while not stop.wait(0.5):
        if heartbeat_file is not None and time.monotonic() - beat_at >= HEARTBEAT_S:
            beat_at = time.monotonic()
            beat(app, workers, heartbeat_file)
    started = time.monotonic()
    # Stops consuming, lets running batches finish, and returns prefetched messages to Redis.
    stoppers = [
        threading.Thread(target=w.stop, kwargs={"timeout": SENDER_DRAIN_MS}) for w in workers
    ]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    log.info("sender.stopped", drain_s=round(time.monotonic() - started, 2))


def beat(app: App, workers: list[Any], heartbeat_file: Path) -> None:
    """Touch ``heartbeat_file`` if Redis answers and every worker still consumes."""
    try:
        app.redis.ping()
    except Exception as exc:
        log.warning("sender.heartbeat_skipped", error=str(exc))
        return
    alive = all(t.is_alive() for w in workers for t in w.consumers.values())
    if alive:
        heartbeat_file.touch()
    else:
        log.warning("sender.heartbeat_skipped", error="a consumer thread died")


@click.command()
@click.option("--threads", default=8, show_default=True, help="Batches processed concurrently.")
@click.option("--channels", default="sms,email", show_default=True, help="Lanes to serve.")
@click.option(
    "--heartbeat-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Touch this file every few seconds while healthy (the instance's health check).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Sender processes, each with --threads (one per core: a process is GIL-bound).",
)
@pass_app
def sender(
    app: App, threads: int, channels: str, heartbeat_file: Path | None, processes: int
) -> None:
    """The sender workers (dramatiq on Redis): send work → Twilio / SendGrid."""
    chosen = tuple(c.strip() for c in channels.split(",") if c.strip())
    if not chosen or set(chosen) - {"sms", "email"}:
        raise click.BadParameter("use sms, email or sms,email", param_hint="--channels")
    stop = threading.Event()
    stop_on_signals(stop)
    if processes > 1:
        from workers.processes import Supervisor

        child = ["sender", "--threads", str(threads), "--channels", ",".join(chosen)]
        code = Supervisor(child, processes, stop, heartbeat_file=heartbeat_file).run()
        if code:
            raise click.ClickException("sender processes kept exiting at start (see the log)")
        return
    run_sender(app, stop, threads=threads, channels=chosen, heartbeat_file=heartbeat_file)


def run_scheduler(
    app: App,
    stop: threading.Event,
    *,
    interval_s: float,
    stall_s: float | None = None,
    stuck_s: float | None = None,
    publish_metrics_s: float = 0.0,
    leadership: Leadership | None = None,
) -> None:
    """Sweep every ``interval_s`` (and publish the scaling metrics every
    ``publish_metrics_s``, when positive) until ``stop`` is set, while this process holds
    the scheduler's lease (``leadership``, default: the Redis lease)."""
    from messaging.blasts.scheduled import ScheduledReleases
    from messaging.blasts.winner import WinnerPicker
    from messaging.safety.sweep import STALL_S, STUCK_S, Sweeper
    from queues.aws import make_cloudwatch
    from queues.capacity import publish_metrics
    from queues.leader import RedisLeaderLease

    # Scheduled blasts are expanded by one worker thread, so a large one does not hold up
    # the sweeps (in-doubt rows must settle within a minute).
    expansions = ThreadPoolExecutor(1, thread_name_prefix="scheduled-expansion")
    expanding: dict[str, Future[object]] = {}

    def between_pages() -> None:
        # SIGTERM: stop after this page (exit within 30 s); the next leader resumes the
        # expansion from its cursor (messaging.blasts.scheduled.ORPHAN_S).
        if stop.is_set():
            raise InterruptedError("scheduler stopping")

    def expand(blast: BlastRecord) -> None:
        expanding[blast.blast_id] = expansions.submit(app.intake.expand, blast, between_pages)

    def running() -> set[str]:
        for blast_id, future in list(expanding.items()):
            if future.done():
                del expanding[blast_id]
                if (error := future.exception()) is not None:  # resumed as an orphan later
                    log.error("scheduler.expansion_failed", blast_id=blast_id, error=str(error))
        return set(expanding)

    releases = ScheduledReleases(app.blasts, app.actions.lifecycle, expand, running=running)
    sweeper = Sweeper(
        app.actions,
        stall_s=stall_s or STALL_S,
        stuck_s=stuck_s or STUCK_S,
        in_doubt=app.in_doubt_settler(),
        inflight=app.inflight,
        breakers=app.breakers(),
        scheduled=releases,
        winners=WinnerPicker(app.blasts, app.blasts, app.stores.links),
    )
    cloudwatch = make_cloudwatch(app.settings) if publish_metrics_s else None
    rates = {"sms": app.settings.sms_rate_account, "email": app.settings.email_rate}
    # One scheduler does the work fleet-wide; the others wait for its lease to lapse.
    lease = leadership or RedisLeaderLease(app.redis, app.names, "scheduler")
    published_at = 0.0
    while not stop.is_set():
        try:
            leading = lease.hold()
        except Exception as exc:
            log.error("scheduler.lease_failed", error=str(exc), error_type=type(exc).__name__)
            leading = False
        if not leading:
            stop.wait(interval_s)
            continue
        if cloudwatch is not None and time.monotonic() - published_at >= publish_metrics_s:
            published_at = time.monotonic()
            try:  # the autoscaling signal; a failed tick is retried at the next one
                publish_metrics(app.stores.reports, cloudwatch, app.settings.prefix, rates)
            except Exception as exc:
                log.warning(
                    "scheduler.metrics_failed", error=str(exc), error_type=type(exc).__name__
                )
        try:
            report = sweeper.run_once()
            if (
                report.redriven
                or report.lost_in_flight
                or report.expired
                or report.completed
                or report.paused
            ):
                log.info(
                    "scheduler.swept",
                    redriven=report.redriven,
                    lost=report.lost_in_flight,
                    expired=report.expired,
                    completed=report.completed,
                    paused=report.paused,
                )
        except Exception as exc:
            log.error("scheduler.failed", error=str(exc), error_type=type(exc).__name__)
        _compact_counts(app)
        _pump_lanes(app)
        _until_next_sweep(releases, stop, interval_s)
    expansions.shutdown(wait=True)
    try:
        lease.release()
    except Exception as exc:  # the lease lapses by itself within its TTL
        log.warning("scheduler.release_failed", error=str(exc))


#: Count deltas folded per transaction, and transactions per scheduler pass: at the
#: fleet's write rate a pass leaves a few thousand deltas (one per statement and state
#: touched), so this keeps up with room to spare and stays a short transaction.
COMPACT_ROWS = 20_000
COMPACT_BATCHES = 10


def _pump_lanes(app: App) -> None:
    """Let in the next unit of blasts whose place in a lane lapsed (a sender killed with it
    prefetched; ``queues/flow/fair_pump.lua``), so such a blast waits seconds, not until
    the stall re-drive."""
    try:
        if moved := app.lanes.pump():
            log.info("scheduler.lanes_pumped", units=moved)
    except Exception as exc:
        log.warning("scheduler.pump_failed", error=str(exc), error_type=type(exc).__name__)


def _compact_counts(app: App) -> None:
    """Fold the ledger's count deltas (PostgreSQL) so reading a blast's counts stays a few
    rows (issue #21); a failed pass is retried at the next one, readers stay exact."""
    try:
        for _ in range(COMPACT_BATCHES):
            if app.stores.retention.compact_counts(COMPACT_ROWS) < COMPACT_ROWS:
                return
    except Exception as exc:
        log.warning("scheduler.compact_failed", error=str(exc), error_type=type(exc).__name__)


def _until_next_sweep(
    releases: ScheduledReleases, stop: threading.Event, interval_s: float
) -> None:
    """Wait ``interval_s`` for the next sweep, releasing scheduled blasts meanwhile the
    moment they are due (contract §4: within a second of ``send_at``)."""
    deadline = time.monotonic() + interval_s
    while (left := deadline - time.monotonic()) > 0:
        if stop.wait(releases.seconds_until_due(left)):
            return
        try:
            releases.release_due()
        except Exception as exc:  # the next wake-up, or the sweep, tries again
            log.error("scheduler.release_failed", error=str(exc), error_type=type(exc).__name__)


@click.command()
@click.option("--interval", default=5.0, show_default=True, help="Seconds between sweeps.")
@click.option(
    "--stall-after",
    type=float,
    default=None,
    help="Re-drive a blast's pending rows after this many seconds without progress [120].",
)
@click.option(
    "--stuck-after",
    type=float,
    default=None,
    help="Fail rows claimed this many seconds ago with no outcome (their worker died) [600]. "
    "Keep it well above the longest batch (~1 min with retries).",
)
@click.option(
    "--metrics-every",
    type=float,
    default=60.0,
    show_default=True,
    help="Publish the backlog to CloudWatch every this many seconds (0: never). "
    "The auto-scaling group scales on it (deploy/).",
)
@pass_app
def scheduler(
    app: App,
    interval: float,
    stall_after: float | None,
    stuck_after: float | None,
    metrics_every: float,
) -> None:
    """Re-drives lost work, ends stuck and expired blasts, releases deferred work."""
    stop = threading.Event()
    stop_on_signals(stop)
    run_scheduler(
        app,
        stop,
        interval_s=interval,
        stall_s=stall_after,
        stuck_s=stuck_after,
        publish_metrics_s=metrics_every,
    )


COMMANDS = [intake, sender, scheduler]
