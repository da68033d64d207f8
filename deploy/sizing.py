"""Writes config/sizing.py's figures where people and CloudFormation read them.

    python deploy/sizing.py --check   exit 1 (with a diff) if the template or the docs differ
    python deploy/sizing.py --write   rewrite them

In the template, a value followed by ``# sizing: NAME`` is the figure NAME (a constant of
config/sizing.py, or ``worker_max_size``), and the ``Description`` after ``# sizing:
description`` is WorkerMaxSize's formula. In docs/scaling.md, the text between
``<!-- sizing:begin -->`` and ``<!-- sizing:end -->`` is generated.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import sizing  # noqa: E402 - the repository root is put on the path first

TEMPLATE = ROOT / "deploy" / "cloudformation" / "rapid-response.yaml"
DOCS = ROOT / "docs" / "scaling.md"

#: Provider profiles of the docs' table: (name, SMS limit, email limit).
PROFILES = (
    ("A: 10DLC, SendGrid at the default rate", 225, 1000),
    ("B: one short code, larger SendGrid account", 400, 5000),
    ("C: short codes totalling 1,000 MPS, SendGrid at 10,000/s", 1000, 10000),
)


def figures() -> dict[str, str]:
    """Every template figure, as the template writes it."""
    return {
        "DEFAULT_SMS_RATE_ACCOUNT": str(int(sizing.DEFAULT_SMS_RATE_ACCOUNT)),
        "DEFAULT_EMAIL_RATE": str(int(sizing.DEFAULT_EMAIL_RATE)),
        "worker_max_size": str(
            sizing.worker_max_size(sizing.DEFAULT_SMS_RATE_ACCOUNT, sizing.DEFAULT_EMAIL_RATE)
        ),
        "INSTANCE_WARMUP_S": str(sizing.INSTANCE_WARMUP_S),
        "TARGET_UTILIZATION": str(float(sizing.TARGET_UTILIZATION)),
    }


def max_size_description(indent: str) -> list[str]:
    sms, email = int(sizing.SMS_PER_INSTANCE_PER_S), int(sizing.EMAIL_PER_INSTANCE_PER_S)
    text = (
        f"Cap of the worker group = max({sizing.MIN_WORKER_MAX_SIZE}, ceil(SmsRateAccount / {sms}"
        f" + EmailRate / {email})), {sms} SMS/s and {email} emails/s being one worker instance's"
        " measured rates (config/sizing.py). More instances cannot send faster: the fleet-wide"
        " limiter and the provider hold the rate. Recompute when you change a rate"
        " (docs/scaling.md)."
    )
    lines, line = [], ""
    for word in text.split():
        if len(indent) + 2 + len(line) + len(word) + 1 > 98:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return [f"{indent}Description: >-"] + [f"{indent}  {x}" for x in lines]


def render_template(text: str) -> str:
    values = figures()
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = re.match(r"^(\s*)# sizing: description$", line)
        if marker:
            out.append(line)
            indent = marker.group(1)
            i += 2  # the Description line, then its folded lines
            while i < len(lines) and lines[i].startswith(indent + "  "):
                i += 1
            out += max_size_description(indent)
            continue
        value = re.match(r"^(\s*[A-Za-z]+: )(\S+)( # sizing: (\w+))$", line)
        if value:
            line = value.group(1) + values[value.group(4)] + value.group(3)
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def docs_block() -> str:
    sms, email = sizing.SMS_PER_INSTANCE_PER_S, sizing.EMAIL_PER_INSTANCE_PER_S
    rows = [
        "| figure | value | used for |",
        "|---|---|---|",
        f"| SMS one worker instance sends | {sms:,.0f}/s | capacity metric, `WorkerMaxSize` |",
        f"| emails one worker instance sends | {email:,.0f}/s | capacity metric, `WorkerMaxSize` |",
        f"| drain target | {sizing.DRAIN_TARGET_S:,.0f} s | capacity metric |",
        f"| scaling target (required ÷ in-service) | {sizing.TARGET_UTILIZATION} | scaling"
        " policy |",
        f"| instance warm-up | {sizing.INSTANCE_WARMUP_S} s | scaling policy |",
        "",
        "```",
        f"required(channel) = min(backlog / {sizing.DRAIN_TARGET_S:.0f} s, provider rate)"
        " / per-instance rate",
        f"RequiredInstances = required(sms) + required(email)     (SMS at {sms:,.0f}/s,"
        f" email at {email:,.0f}/s)",
        f"WorkerMaxSize     = max({sizing.MIN_WORKER_MAX_SIZE},"
        f" ceil(SMS_RATE_ACCOUNT / {sms:,.0f} + EMAIL_RATE / {email:,.0f}))",
        "```",
        "",
        "| profile | SMS limit | email limit | load at both limits (instances) | WorkerMaxSize |",
        "|---|---|---|---|---|",
    ]
    for name, sms_rate, email_rate in PROFILES:
        a = sizing.required_instances(math.inf, sms_rate, "sms")
        b = sizing.required_instances(math.inf, email_rate, "email")
        rows.append(
            f"| {name} | {sms_rate:,} MPS | {email_rate:,}/s | {a:.2f} + {b:.2f} = {a + b:.2f}"
            f" | {sizing.worker_max_size(sms_rate, email_rate)} |"
        )
    return "\n".join(rows)


def render_docs(text: str) -> str:
    begin, end = "<!-- sizing:begin -->", "<!-- sizing:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{docs_block()}\n{end}{tail}"


def main(argv: list[str]) -> int:
    if argv not in (["--check"], ["--write"]):
        print(__doc__, file=sys.stderr)
        return 2
    stale = 0
    for path, render in ((TEMPLATE, render_template), (DOCS, render_docs)):
        current = path.read_text()
        wanted = render(current)
        if wanted == current:
            continue
        if argv == ["--write"]:
            path.write_text(wanted)
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), wanted.splitlines(True), str(path), "config/sizing.py"
                )
            )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
