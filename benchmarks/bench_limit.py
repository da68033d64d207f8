"""The SMS pipeline against the physical limit: the same messages, the same official client.

    python -m benchmarks.bench_limit                  # 20,000 recipients, 3 runs of each
    python -m benchmarks.bench_limit --quick          # 3,000 recipients, 3 runs

Four figures, each the median (min–max) of ``--runs`` runs against one zero-latency Twilio
emulator running in its own process:

- ``emulator``: the emulator's own ceiling — several client processes posting valid
  ``Messages.json`` form bodies with raw aiohttp, as fast as it answers;
- ``bare``: one process, a bare loop of the official ``twilio`` client configured exactly
  as the product's (its HTTP client, ``MAX_IN_FLIGHT`` requests in flight), posting the same
  messages the pipeline sends;
- ``pipeline``: the sender path — one ``rapid sender`` process (``--processes`` of them)
  taking the batches of a blast expanded beforehand (claims, suppression and quiet-hours
  checks, rate limiter set high, templates, the official client, ledger updates, dramatiq's
  fetch and ack); the blast waits paused until every process fetches, and the clock runs
  from its resume until it is completed in the ledger;
- ``blast``: the same plus expansion and queueing, from the alert to completion
  (:func:`benchmarks.bench_sender.run_once`).

``ratio`` is pipeline / bare (target ≥ 0.85), ``ratio_blast`` blast / bare; the emulator must
sit above both, or the ratio says nothing. The runs are interleaved, so a noisy neighbour
hurts every figure alike. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from sqlalchemy import func, select
from twilio.rest import Client

from benchmarks.bench_sender import _script_calls, process_cpu_s, run_once
from benchmarks.harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    DEFAULT_PG_URL,
    emulator_process,
    fleet_env,
    median,
    seconds_to_completion,
    seed_subscribers,
    throwaway_pg,
)
from config.settings import load_settings
from messaging.blasts.lifecycle import BlastLifecycle
from messaging.providers.aioloop import new_event_loop
from messaging.providers.twilio_sms import MAX_IN_FLIGHT, RebasedAsyncHttpClient
from messaging.sending.sms import SmsConfig
from messaging.store.schema import deliveries
from workers.app import App

#: Client processes flooding the emulator when measuring its ceiling (the box has 2 cores:
#: more would only fight the emulator for CPU).
FLOOD_PROCESSES = 2
#: dramatiq brokers of one `rapid sender` process: one per priority (workers/commands/run.py).
BROKERS_PER_PROCESS = 3
#: The SMS template of every run (bench_sender's).
BODY = "Hi {{ first_name }}, watch this clip: https://ex.am/p1"


def messages(n: int, settings_env: dict[str, str]) -> list[dict[str, Any]]:
    """The create() arguments the pipeline sends its first ``n`` recipients (see sms.py)."""
    s = load_settings(settings_env)
    config = SmsConfig(org_name=s.org_name or "", from_numbers=s.twilio_from_numbers)
    out = []
    for i in range(1, n + 1):
        to = f"+1412{2000000 + i:07d}"
        out.append(
            {
                "to": to,
                "from_": config.sender_for(to),
                "body": f"Hi Pat{i}, watch this clip: https://ex.am/p1",
                "status_callback": f"{s.public_base_url}/webhooks/twilio/status",
            }
        )
    return out


# --- (a) the emulator's ceiling --------------------------------------------------------


async def _flood(url: str, bodies: list[bytes], start_at: float) -> tuple[float, float]:
    path = f"{url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    auth = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
    limit = asyncio.Semaphore(MAX_IN_FLIGHT)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def post(body: bytes) -> None:
            async with limit, session.post(path, data=body) as response:
                await response.read()
                assert response.status == 201, response.status

        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        await asyncio.gather(*(post(b) for b in bodies))
        return started, time.time()


def _flood_process(url: str, bodies: list[bytes], start_at: float) -> tuple[float, float]:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_flood(url, bodies, start_at))
    finally:
        loop.close()


def emulator_ceiling(url: str, msgs: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests/s the emulator answers when several processes post at once."""
    bodies = [
        urlencode(
            {
                "To": m["to"],
                "From": m["from_"],
                "Body": m["body"],
                "StatusCallback": m["status_callback"],
            }
        ).encode()
        for m in msgs
    ]
    shares = [bodies[i::FLOOD_PROCESSES] for i in range(FLOOD_PROCESSES)]
    start_at = time.time() + 2.0  # every process is up and connected before the clock runs
    with multiprocessing.get_context("spawn").Pool(FLOOD_PROCESSES) as pool:
        spans = pool.starmap(_flood_process, [(url, share, start_at) for share in shares])
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return {
        "sent": len(bodies),
        "seconds": round(seconds, 3),
        "per_s": round(len(bodies) / seconds, 1),
    }


# --- (b) a bare loop of the official client --------------------------------------------


async def _bare(url: str, msgs: list[dict[str, Any]]) -> float:
    # The product's configuration: its HTTP client subclass, a pooled aiohttp session,
    # MAX_IN_FLIGHT requests in flight (twilio_sms.TwilioSms).
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=RebasedAsyncHttpClient(url))
    create = client.api.v2010.account.messages.create_async
    await create(**msgs[0])  # the session and API modules exist before the clock runs
    limit = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def send(m: dict[str, Any]) -> None:
        async with limit:
            sent = await create(**m)
            assert sent.sid

    started = time.monotonic()
    await asyncio.gather(*(send(m) for m in msgs))
    seconds = time.monotonic() - started
    await client.http_client.close()
    return seconds


def bare_loop(url: str, msgs: list[dict[str, Any]]) -> dict[str, Any]:
    """Messages/s of the official client alone, in this process, and per CPU-second of it."""
    loop = new_event_loop()  # the product's provider loop (uvloop)
    try:
        cpu_before = time.process_time()
        seconds = loop.run_until_complete(_bare(url, msgs))
        cpu_s = time.process_time() - cpu_before
    finally:
        loop.close()
    return {
        "sent": len(msgs),
        "seconds": round(seconds, 3),
        "per_s": round(len(msgs) / seconds, 1),
        "per_cpu_s": round(len(msgs) / max(cpu_s, 1e-9), 1),
    }


# --- (c) the sender path ---------------------------------------------------------------


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live children (``rapid sender --processes N``)."""
    total = process_cpu_s(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    total += process_cpu_s(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
    return total


def sender_path(
    db_url: str, urls: dict[str, str], threads: int, processes: int = 1
) -> dict[str, Any]:
    """Recipients/s of one `rapid sender` (of ``processes`` processes) on a blast expanded
    before it starts."""
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    env = fleet_env(db_url, urls, prefix)
    app = App(load_settings(env))
    blast_id = f"bench-path-{uuid.uuid4().hex[:6]}"
    app.intake.handle(
        json.dumps({"alert_id": blast_id, "topic": "bench-sms", "sms": {"body": BODY}})
    )
    # Paused until every sender process is up: with `--processes 2` the first one would
    # otherwise send a good part of the blast before the clock could start for both.
    lifecycle = BlastLifecycle(app.blasts, app.ledger, app.control, app.lanes)
    lifecycle.pause(blast_id)
    scripts_before = _script_calls(app.redis)
    command = [sys.executable, "-m", "workers", "sender", "--threads", str(threads)]
    command += ["--processes", str(processes)]
    proc = subprocess.Popen([*command, "--channels", "sms"], env=env, stderr=subprocess.DEVNULL)
    try:
        # dramatiq records a broker's heartbeat with its first fetch: the clock starts once
        # every process fetches (each has a broker per priority), after Python start-up,
        # and the blast resumes (its pending rows go back on the lane, as on any resume).
        heartbeats, deadline = f"{prefix}-dramatiq:__heartbeats__", time.monotonic() + 120
        while app.redis.zcard(heartbeats) < BROKERS_PER_PROCESS * processes:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the sender's processes did not all start")
            time.sleep(0.01)
        time.sleep(1.0)  # the units queued before the pause are taken and skipped
        started, cpu_before = time.time(), tree_cpu_s(proc.pid)
        lifecycle.resume(blast_id)
        seconds = seconds_to_completion(app.engine, blast_id, started)
        cpu_s = tree_cpu_s(proc.pid) - cpu_before
        scripts = _script_calls(app.redis) - scripts_before
        with app.engine.connect() as conn:
            sent = conn.execute(
                select(func.count()).where(
                    deliveries.c.blast_id == blast_id, deliveries.c.state == "sent"
                )
            ).scalar_one()
    finally:
        proc.terminate()
        proc.wait(timeout=40)
        app.redis.delete(*app.redis.keys(f"{prefix}*") or [f"{prefix}:none"])
        app.close()
    return {
        "sent": sent,
        "seconds": round(seconds, 3),
        "per_s": round(sent / seconds, 1),
        "per_cpu_s": round(sent / max(cpu_s, 1e-9), 1),
        # Shared Redis: other clients' scripts count too when the machine is shared.
        "redis_script_calls_per_recipient": round(scripts / max(sent, 1), 3),
    }


# --- putting it together ---------------------------------------------------------------


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["per_s"] for r in runs]
    return {
        "median_per_s": median(rates),
        "min_per_s": min(rates),
        "max_per_s": max(rates),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sms", type=int, default=20_000, help="recipients per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="threads of `rapid sender`")
    parser.add_argument(
        "--processes", type=int, default=1, help="`rapid sender --processes` of the pipeline"
    )
    parser.add_argument("--quick", action="store_true", help="3,000 recipients")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    n = 3_000 if args.quick else args.sms
    from config.logging import configure_logging
    from config.settings import Settings

    configure_logging(Settings(log_format="json", log_level="WARNING"), stream=sys.stderr)
    with throwaway_pg(args.pg_url) as db_url, emulator_process() as urls:
        seed_subscribers(db_url, {"bench-sms": n})
        msgs = messages(n, fleet_env(db_url, urls, "bench"))
        emulator, bare, pipeline, blast = [], [], [], []
        for _ in range(args.runs):  # interleaved: a noisy neighbour hurts all alike
            emulator.append(emulator_ceiling(urls["twilio"], msgs))
            bare.append(bare_loop(urls["twilio"], msgs))
            pipeline.append(sender_path(db_url, urls, args.threads, args.processes))
            blast.append(run_once(db_url, urls, "sms", args.threads))
    bare_per_s = median([b["per_s"] for b in bare])
    result = {
        "recipients": n,
        "sender_processes": args.processes,
        # With several processes the pipeline is the host's: every core this machine has,
        # against one process of the bare client (which cannot use a second core).
        "figure": (
            "host: `rapid sender --processes N` / one bare client process"
            if args.processes > 1
            else "one sender process / one bare client process"
        ),
        "emulator": summary(emulator),
        "bare": summary(bare),
        "pipeline": summary(pipeline),
        "blast": summary(blast),
        "ratio": round(median([p["per_s"] for p in pipeline]) / bare_per_s, 3),
        "ratio_per_run": [
            round(p["per_s"] / b["per_s"], 3) for p, b in zip(pipeline, bare, strict=True)
        ],
        "ratio_blast": round(median([b["per_s"] for b in blast]) / bare_per_s, 3),
        # Recipients per CPU-second of the sender (its processes) / of the bare client: what
        # the pipeline costs beside the client, whatever the neighbours take (a shared
        # host's wall-clock ratio swings by 2x from run to run). The database's, Redis's and
        # the emulator's CPU count in neither.
        "ratio_per_cpu": round(
            median([p["per_cpu_s"] for p in pipeline]) / median([b["per_cpu_s"] for b in bare]),
            3,
        ),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
