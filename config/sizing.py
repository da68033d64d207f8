"""The fleet's sizing constants: the one place they are written down.

``queues/capacity.py`` turns the backlog into required instances with them at run time;
``deploy/sizing.py`` writes them into the CloudFormation template's defaults and the table
of ``docs/scaling.md``; ``tests/test_deploy.py`` checks that both say what this file says.
Change a figure here, run ``python -m deploy.sizing --write``, and commit the three together.
"""

from __future__ import annotations

import math

#: SMS one worker instance (2 vCPU, one ``rapid sender``) sends per second against a provider
#: answering in 200 ms: 0.98 of a paced 500/s held by one process (docs/benchmarks.md,
#: latency-bound rate). The zero-latency figure (~2,000/s) is not what Twilio answers at.
SMS_PER_INSTANCE_PER_S = 500.0

#: Email recipients one worker instance sends per second: about half the 8,800/s wall-clock
#: measurement (docs/benchmarks.md), which had the database to itself, not shared with a
#: fleet. An instance's CPU is shared between the channels, so an email costs it 1/8 of an SMS.
EMAIL_PER_INSTANCE_PER_S = 4000.0

#: How fast the fleet should aim to drain what is sendable now: a backlog of this many
#: seconds of one instance's work asks for one instance. Five minutes: a 30,000-SMS blast at a
#: 225 MPS account needs 0.45 instances (the provider caps it), not the group's maximum.
DRAIN_TARGET_S = 300.0

#: Seconds from launch to a signalled, healthy worker (dnf from the pinned AMI's repository,
#: the wheelhouse install, the health gate), with margin: the scaling policy's warm-up.
INSTANCE_WARMUP_S = 420

#: The scaling policy's target of required ÷ in-service instances: 1.0 means "as many
#: instances as the capacity metric asks for" (the metric already holds the provider cap).
TARGET_UTILIZATION = 1.0

#: The worker group's cap never goes below this (a rolling update replaces one at a time).
MIN_WORKER_MAX_SIZE = 2

#: Provider limits the template defaults to (a 10DLC brand at the top tier; SendGrid's
#: default sending rate). Deployments set their own.
DEFAULT_SMS_RATE_ACCOUNT = 225.0
DEFAULT_EMAIL_RATE = 1000.0

#: Per-instance rate by channel.
PER_INSTANCE_PER_S = {"sms": SMS_PER_INSTANCE_PER_S, "email": EMAIL_PER_INSTANCE_PER_S}


def required_instances(backlog: float, provider_rate_per_s: float, channel: str) -> float:
    """Instances one channel needs now: ``min(backlog / drain target, provider rate)``
    divided by one instance's rate. Fractional: the channels share an instance's CPU."""
    wanted_per_s = min(max(backlog, 0.0) / DRAIN_TARGET_S, provider_rate_per_s)
    return wanted_per_s / PER_INSTANCE_PER_S[channel]


def worker_max_size(sms_rate_account: float, email_rate: float) -> int:
    """The worker group's cap: both channels at their provider limit at once; more
    instances only wait on the fleet-wide limiter."""
    load = required_instances(math.inf, sms_rate_account, "sms") + required_instances(
        math.inf, email_rate, "email"
    )
    # round() first: 0.45 + 0.25 must not become 1 + epsilon in floating point.
    return max(MIN_WORKER_MAX_SIZE, math.ceil(round(load, 9)))
