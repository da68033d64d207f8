"""One `rapid sender` process against zero-latency emulators: recipients per second.

    python -m benchmarks.bench_sender                  # 20,000 SMS and 50,000 emails, 3 runs
    python -m benchmarks.bench_sender --sms 5000 --email 10000 --runs 1

The emulators run in their own process; one real `rapid sender` process is started and
warmed up; then the blast is expanded here through the real intake code, and the clock runs
from the start of expansion until the blast is completed in the ledger (so expansion,
queueing, claims, rendering, the official clients and the ledger writes are all inside).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from benchmarks.harness import (
    DEFAULT_PG_URL,
    emulator_process,
    fleet_env,
    median,
    seconds_to_completion,
    seed_subscribers,
    throwaway_pg,
)
from config.settings import load_settings
from messaging.store.schema import deliveries
from workers.app import App


def run_once(
    db_url: str, urls: dict[str, str], channel: str, threads: int, topic: str | None = None
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    env = fleet_env(db_url, urls, prefix)
    app = App(load_settings(env))
    blast_id = f"bench-{channel}-{uuid.uuid4().hex[:6]}"
    content = (
        {"sms": {"body": "Hi {{ first_name }}, watch this clip: https://ex.am/p1"}}
        if channel == "sms"
        else {
            "email": {
                "subject": "Hi {{ first_name }}",
                "text": "Watch: https://ex.am/p1",
                "html": "<p>Hi {{ first_name }}</p>",
            }
        }
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers",
            "sender",
            "--threads",
            str(threads),
            "--channels",
            channel,
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Wait until the sender's consumers are up (dramatiq registers heartbeats), so the
        # clock measures sending, not Python start-up.
        heartbeats = f"{prefix}-dramatiq:__heartbeats__"
        while not app.redis.exists(heartbeats):
            time.sleep(0.05)
        cpu_before = process_cpu_s(proc.pid)
        commands_before = int(app.redis.info("stats")["total_commands_processed"])
        scripts_before = _script_calls(app.redis)
        started = time.time()
        app.intake.handle(
            json.dumps({"alert_id": blast_id, "topic": topic or f"bench-{channel}", **content})
        )
        expanded = time.time()
        seconds = seconds_to_completion(app.engine, blast_id, started)
        cpu_s = process_cpu_s(proc.pid) - cpu_before
        rss_mb = peak_rss_mb(proc.pid)
        # Every Redis command the fleet issued for this blast (enqueue, lanes, limiter, kill
        # switch, acks, plus idle polling), per recipient: the batching target is <= 0.05.
        commands = int(app.redis.info("stats")["total_commands_processed"]) - commands_before
        scripts = _script_calls(app.redis) - scripts_before
    finally:
        proc.terminate()
        proc.wait(timeout=40)
    with app.engine.connect() as conn:
        sent = conn.execute(
            select(func.count()).where(
                deliveries.c.blast_id == blast_id, deliveries.c.state == "sent"
            )
        ).scalar_one()
    app.redis.delete(*app.redis.keys(f"{prefix}*") or [f"{prefix}:none"])
    app.close()
    return {
        "sent": sent,
        "seconds": round(seconds, 3),
        "per_s": round(sent / seconds, 1),
        "expand_s": round(expanded - started, 2),
        # Recipients per CPU-second of the sender process: the per-core rate, independent of
        # what else the machine runs (the database, Redis and the emulator are elsewhere).
        "sender_cpu_s": round(cpu_s, 2),
        "per_cpu_s": round(sent / max(cpu_s, 1e-9), 1),
        "sender_peak_rss_mb": rss_mb,
        "redis_commands_per_recipient": round(commands / max(sent, 1), 3),
        "redis_script_calls_per_recipient": round(scripts / max(sent, 1), 3),
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """A running process's peak resident memory so far, in MB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _script_calls(client: Any) -> int:
    """Lua script calls so far (dramatiq's dispatch and our limiter): each is one round trip
    that runs many commands inside Redis, which the command count above also includes."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sms", type=int, default=20_000)
    parser.add_argument("--email", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    # Logs to stderr, warnings only: stdout carries the JSON result.
    from config.logging import configure_logging
    from config.settings import Settings

    configure_logging(Settings(log_format="json", log_level="WARNING"), stream=sys.stderr)
    results: dict[str, Any] = {}
    with throwaway_pg(args.pg_url) as db_url, emulator_process() as urls:
        seed_subscribers(
            db_url,
            {
                "bench-sms": max(args.sms, 1),
                "bench-email": max(args.email, 1),
                # A tenth of each: the sender's memory must not grow with the blast.
                "bench-sms-small": max(args.sms // 10, 1),
                "bench-email-small": max(args.email // 10, 1),
            },
        )
        for channel, n in (("sms", args.sms), ("email", args.email)):
            if n <= 0:
                continue
            # Each run is its own blast over the same subscribers.
            runs = [run_once(db_url, urls, channel, args.threads) for _ in range(args.runs)]
            rates = [r["per_s"] for r in runs]
            per_cpu = [r["per_cpu_s"] for r in runs]
            small = run_once(db_url, urls, channel, args.threads, topic=f"bench-{channel}-small")
            large_rss = max(r["sender_peak_rss_mb"] for r in runs)
            results[channel] = {
                "recipients": runs[0]["sent"],
                "median_per_s": median(rates),
                "min_per_s": min(rates),
                "max_per_s": max(rates),
                "median_per_cpu_s": median(per_cpu),
                "min_per_cpu_s": min(per_cpu),
                "max_per_cpu_s": max(per_cpu),
                "rss": {
                    "small_recipients": small["sent"],
                    "small_peak_rss_mb": small["sender_peak_rss_mb"],
                    "large_recipients": runs[0]["sent"],
                    "large_peak_rss_mb": large_rss,
                    "ratio": round(large_rss / small["sender_peak_rss_mb"], 3),
                },
                "runs": runs,
            }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
