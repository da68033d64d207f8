"""`make bench`: run the benchmarks and write docs/benchmarks.md.

    python -m benchmarks.run                      # the full set (1,000,000-row import)
    python -m benchmarks.run --quick              # smaller sizes, same shape

Each benchmark runs in its own process and prints JSON; this script collects the figures,
with medians and min–max where a benchmark repeats, and writes the table with the exact
commands that produced them. The machines are shared and noisy: compare ratios in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

#: What limits the figures that miss their targets (profiled; see the issue notes).
NOTES = """## Where a target is missed, and why

- **Import, rows/s.** On this 2-core box the database alone needs ~39 µs per row (a plain
  server-side insert of 1M supporters plus their subscriptions took 39 s), and our process
  ~46 µs per row (CSV ~7 µs, normalisation ~14 µs, the rest building COPY rows and
  bookkeeping); parsing and writing overlap only partly on one Python process (the GIL).
  Next steps: parse in a second process, psycopg pipeline mode. Memory is well inside the
  target (two batches alive at most).
- **Redis round trips per recipient, SMS.** Email (1000 per batch) is far under the target;
  SMS batches are 100 recipients, so dramatiq's enqueue/fetch/ack (~3 script calls), the
  limiter (1) and the idle polls of the lanes add up to ~0.05–0.1. Next steps: 250-recipient
  SMS batches for normal/bulk, fewer idle polls. Commands run *inside* a script are not
  round trips; the second Redis row counts them anyway.
- **SMS recipients/s** has no target here: one process, every request through the official
  client at zero latency, on a machine shared with PostgreSQL, Redis and the emulator. The
  range is wide because the box is shared; issue #8 will measure it against a bare loop
  of the same client.
"""


def run(args: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", *args]
    print("$ python -m " + " ".join(args), file=sys.stderr)
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600)
    return dict(json.loads(out.stdout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows = 100_000 if args.quick else 1_000_000
    sms, email, runs = (3_000, 10_000, 1) if args.quick else (20_000, 50_000, 3)
    import_cmd = ["benchmarks.bench_import", "--rows", str(rows)]
    sender_cmd = [
        "benchmarks.bench_sender",
        "--sms",
        str(sms),
        "--email",
        str(email),
        "--runs",
        str(runs),
    ]
    imported = run(import_cmd)
    sender = run(sender_cmd)

    def span(r: dict[str, Any]) -> str:
        return f"{r['median_per_s']:,.0f} ({r['min_per_s']:,.0f}–{r['max_per_s']:,.0f})"

    quick = " --quick" if args.quick else ""
    rt = [x["redis_commands_per_recipient"] for ch in ("sms", "email") for x in sender[ch]["runs"]]
    scripts = [
        x["redis_script_calls_per_recipient"] for ch in ("sms", "email") for x in sender[ch]["runs"]
    ]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m benchmarks.run{quick}`) on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, PostgreSQL and Redis on the same machine. Shared, noisy "
        "machines: read the ratios, and rerun before trusting a single figure.",
        "",
        "| figure | measured | target | command |",
        "|---|---|---|---|",
        f"| supporters import, rows/s ({imported['rows']:,} messy rows into PostgreSQL) | "
        f"{imported['rows_per_s']:,} | ≥ 20,000 | `python -m {' '.join(import_cmd)}` |",
        f"| supporters import, peak RSS | {imported['peak_rss_mb']} MB | ≤ 200 MB | same |",
        f"| SMS recipients/s, one `rapid sender` process, zero-latency Twilio emulator "
        f"({sms:,} recipients; median (min–max) of {runs}) | {span(sender['sms'])} | — | "
        f"`python -m {' '.join(sender_cmd)}` |",
        f"| email recipients/s, one `rapid sender` process, zero-latency SendGrid emulator "
        f"({email:,} recipients, 1000 per call) | {span(sender['email'])} | — | same |",
        f"| Redis script round trips per recipient (limiter + dramatiq dispatch: enqueue, "
        f"fetch, ack, idle polls) | {min(scripts):.3f}–{max(scripts):.3f} | ≤ 0.05 | same |",
        f"| Redis commands per recipient, all (including those run inside scripts, "
        f"kill-switch reads, progress) | {min(rt):.3f}–{max(rt):.3f} | — | same |",
        "",
        "The sender figures run from the start of expansion to the blast's completion in the "
        "ledger: expansion, queueing, claims, rendering, the official clients, and the ledger "
        "writes are all inside. The emulators run in their own process.",
        "",
        NOTES,
        "Raw results:",
        "",
        "```json",
        json.dumps({"import": imported, "sender": sender}, indent=2),
        "```",
        "",
    ]
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
