"""Fairness across blasts (issue #21, item 2): many same-priority blasts at once share the
rate, each starts within seconds of its alert, and an urgent alert still overtakes them.

    python -m benchmarks.bench_fairness                              # 50 x 2,000 (~4 min)
    python -m benchmarks.bench_fairness --blasts 5 --recipients 200  # the --quick shape

A moto server (SNS + SQS), ``rapid provision``, and real `rapid intake` and `rapid sender`
processes against the Twilio emulator, the account limited to ``--rate`` SMS/s so the blasts
compete. ``--blasts`` normal alerts to a ``--recipients``-subscriber topic are published at
once (a thread each); once a tenth of their texts has landed, one urgent alert goes to a
20-subscriber topic. Every figure comes from the emulator's ``received_at``:

- **first send**: publish → the blast's first text at the provider, per blast: max and
  p50 (target: every blast within 2 s);
- **share**: texts per blast while every blast is sending (from the last blast's first
  text to the first blast's last), as Jain's index (1 = equal shares; target ≥ 0.9) and
  the smallest share over the largest;
- **urgent**: publish → its first text, with the normal blasts in flight (target ≤ 1 s).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.bench_latency import Inbox, _topic_arn, fleet, percentile
from benchmarks.harness import (
    DEFAULT_PG_URL,
    emulator_process,
    fleet_env,
    moto_server,
    seed_subscribers,
    throwaway_pg,
)

#: Subscribers of the urgent alert's topic.
URGENT_RECIPIENTS = 20
#: How often the emulator is read, in seconds (it keeps only its last 1000 messages).
POLL_S = 0.01


def jain(values: list[int]) -> float:
    """Jain's fairness index: 1 when every value is equal, 1/n when one takes everything."""
    if not values or not any(values):
        return 0.0
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def run(args: argparse.Namespace) -> dict[str, Any]:
    topic, urgent_topic, prefix = "bench-fair", "bench-urgent", f"fair{uuid.uuid4().hex[:6]}"
    with (
        moto_server() as moto_url,
        throwaway_pg(args.pg_url) as db_url,
        emulator_process() as urls,
        tempfile.TemporaryDirectory() as scratch,
    ):
        logs = args.logs or scratch
        Path(logs).mkdir(parents=True, exist_ok=True)
        env = fleet_env(
            db_url,
            urls,
            prefix,
            AWS_ENDPOINT_URL=moto_url,
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto
            SMS_RATE_ACCOUNT=str(args.rate),
            SMS_RATE_PER_SENDER=str(args.rate),
            # Kept logs are for lining up each blast's intake with its first send.
            **({"RAPID_LOG_LEVEL": "INFO"} if args.logs else {}),
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "workers",
                "provision",
                "--topic",
                topic,
                "--topic",
                urgent_topic,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        seed_subscribers(db_url, {topic: args.recipients, urgent_topic: URGENT_RECIPIENTS})
        sender = ("sender", "--threads", str(args.threads), "--channels", "sms")
        inbox = Inbox(urls["twilio"])
        blasts = [f"b{n:03d}" for n in range(args.blasts)]
        total = args.blasts * args.recipients
        published: dict[str, float] = {}
        seen: dict[str, list[float]] = {b: [] for b in [*blasts, "urgent"]}
        try:
            with fleet(env, Path(logs), ("intake",), sender) as app:
                arn, urgent_arn = _topic_arn(app, topic), _topic_arn(app, urgent_topic)

                def publish(blast: str, to: str = arn, priority: str = "normal") -> None:
                    alert: dict[str, Any] = {
                        "alert_id": f"{prefix}-{blast}",
                        "priority": priority,
                        "sms": {"body": f"[{blast}] Hi {{{{ first_name }}}}"},
                    }
                    published[blast] = time.time()
                    app.sns.publish(TopicArn=to, Message=json.dumps(alert))

                with ThreadPoolExecutor(min(16, args.blasts)) as pool:
                    list(pool.map(publish, blasts))
                landed = 0
                deadline = time.monotonic() + args.timeout
                while landed < total + URGENT_RECIPIENTS:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{landed} of {total} texts in {args.timeout} s")
                    if "urgent" not in published and landed >= total // 10:
                        publish("urgent", urgent_arn, "urgent")
                    time.sleep(POLL_S)
                    for m in inbox.new():
                        blast = m["body"].split("[", 1)[1].split("]", 1)[0]
                        seen[blast].append(m["received_at"])
                        landed += 1
        finally:
            inbox.close()
    if args.logs:  # per blast, for lining up with the processes' logs
        detail = {b: {"published": published[b], "first": min(seen[b])} for b in seen}
        (Path(args.logs) / "detail.json").write_text(json.dumps(detail))
    firsts = {b: min(seen[b]) - published[b] for b in blasts}
    lasts = {b: max(seen[b]) for b in blasts}
    window = (max(min(seen[b]) for b in blasts), min(lasts.values()))
    shares = [sum(1 for t in seen[b] if window[0] <= t <= window[1]) for b in blasts]
    return {
        "blasts": args.blasts,
        "recipients_per_blast": args.recipients,
        "rate_per_s": args.rate,
        "sender_threads": args.threads,
        "first_send_s": {
            "max": round(max(firsts.values()), 3),
            "p50": round(percentile(list(firsts.values()), 50), 3),
            "target_max": 2.0,
        },
        "share": {
            "window_s": round(max(0.0, window[1] - window[0]), 2),
            "jain": round(jain(shares), 3),
            "min_over_max": round(min(shares) / max(shares), 3) if max(shares) else 0.0,
            "target_jain": 0.9,
        },
        "urgent_first_send_s": round(min(seen["urgent"]) - published["urgent"], 3),
        "urgent_target_s": 1.0,
        "all_done_s": round(max(lasts.values()) - min(published.values()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--blasts", type=int, default=50)
    parser.add_argument("--recipients", type=int, default=2_000)
    parser.add_argument("--rate", type=int, default=500, help="SMS_RATE_ACCOUNT, texts/s")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--logs", help="keep the processes' logs in this directory")
    args = parser.parse_args(argv)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
