"""``rapid doctor``: every dependency and credential, checked the way the fleet uses it.

One small function per check, each returning a :class:`Check` (name, ok, one-line detail);
a check that raises is a failed check with the error's first line, never a traceback. The
provider checks make one cheap authenticated read each (Twilio's account resource,
SendGrid's key scopes), which the emulators answer as the real APIs do.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import click

from workers.app import App
from workers.output import echo_json

pass_app = click.make_pass_decorator(App)

#: Shortest RAPID_SECRET_KEY the contract accepts, in bytes (an HMAC-SHA256 key).
SECRET_KEY_MIN_BYTES = 32
#: Hosts where an http:// PUBLIC_BASE_URL is fine: the demo and tests on one machine.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str


def needs_provision(name: str, problem: str) -> Check:
    """A failed check that ``rapid provision`` repairs (it creates and migrates everything)."""
    return Check(name, False, f"{problem} (run `rapid provision`)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def check_database(app: App) -> Check:
    """The database answers and its schema is at the newest migration."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from messaging.store.db import MIGRATIONS_DIR, check_connection, current_revision

    check_connection(app.engine)
    where = app.engine.url.render_as_string(hide_password=True)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    current = current_revision(app.engine)
    if current != head:
        return needs_provision(
            "database", f"{where}: schema at {current or 'nothing'}, code expects {head}"
        )
    return Check("database", True, f"{where}: migrations current ({head})")


def check_redis(app: App) -> Check:
    """Redis answers a PING."""
    app.redis.ping()
    return Check("redis", True, f"{_redis_where(app.settings.redis_url)} answers")


def _redis_where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def check_queues(app: App) -> Check:
    """The intake queue and its dead-letter queue exist, and the redrive joins them."""
    sqs = app.sqs
    try:
        intake = sqs.get_queue_url(QueueName=app.names.intake_queue)["QueueUrl"]
        dlq = sqs.get_queue_url(QueueName=app.names.intake_dlq)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return needs_provision("sqs", f"queue {app.names.intake_queue} or its DLQ is missing")
    attributes = sqs.get_queue_attributes(QueueUrl=intake, AttributeNames=["RedrivePolicy"])
    policy = json.loads(attributes.get("Attributes", {}).get("RedrivePolicy") or "{}")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    if policy.get("deadLetterTargetArn") != dlq_arn:
        return Check("sqs", False, f"{app.names.intake_queue} has no redrive to its DLQ")
    return Check("sqs", True, f"{app.names.intake_queue} and {app.names.intake_dlq}, redrive set")


def check_topics(app: App) -> Check:
    """Every alert topic of this prefix is subscribed to the intake queue."""
    sns, sqs = app.sns, app.sqs
    head = f"{app.names.prefix}-alert-"
    arns: list[str] = []
    for page in sns.get_paginator("list_topics").paginate():
        arns += [
            t["TopicArn"]
            for t in page["Topics"]
            if t["TopicArn"].rsplit(":", 1)[-1].startswith(head)
        ]
    if not arns:
        return Check("sns", True, "no alert topics yet (`rapid topics create NAME`)")
    intake = sqs.get_queue_url(QueueName=app.names.intake_queue)["QueueUrl"]
    intake_arn = sqs.get_queue_attributes(QueueUrl=intake, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    unsubscribed = []
    for arn in arns:
        subs = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
        if not any(s.get("Endpoint") == intake_arn for s in subs):
            unsubscribed.append(arn.rsplit(":", 1)[-1].removeprefix(head))
    if unsubscribed:
        names = ", ".join(sorted(unsubscribed))
        return needs_provision("sns", f"not subscribed to the intake queue: {names}")
    return Check("sns", True, f"{len(arns)} alert topic(s), all feeding the intake queue")


def check_twilio(app: App) -> Check:
    """Twilio accepts our credentials (one read of the account) and we have a sender."""
    from messaging.errors import ProviderAuthError
    from messaging.providers.twilio_sms import TwilioSms

    s = app.settings
    if not s.twilio_account_sid and not s.twilio_auth_token:
        return Check("twilio", True, "not configured: this deployment sends no SMS")
    if not (s.twilio_account_sid and s.twilio_auth_token):
        return Check("twilio", False, "set both TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    if not s.twilio_from_numbers and not s.twilio_messaging_service_sid:
        return Check("twilio", False, "set TWILIO_FROM_NUMBERS or TWILIO_MESSAGING_SERVICE_SID")
    transport = TwilioSms(s.twilio_account_sid, s.twilio_auth_token, base_url=s.twilio_api_base_url)
    try:
        status = transport.check_credentials()
    except ProviderAuthError as exc:
        return Check("twilio", False, f"credentials refused: {_first_line(exc)}")
    finally:
        transport.close()
    if status != "active":
        return Check("twilio", False, f"account {s.twilio_account_sid} is {status}")
    return Check("twilio", True, f"account {s.twilio_account_sid} is active")


def check_sendgrid(app: App) -> Check:
    """SendGrid accepts our key and the key may send mail."""
    from messaging.providers.sendgrid_email import SendGridEmail

    s = app.settings
    if not s.sendgrid_api_key:
        return Check("sendgrid", True, "not configured: this deployment sends no email")
    scopes = SendGridEmail(s.sendgrid_api_key, base_url=s.sendgrid_api_base_url).check_credentials()
    return Check("sendgrid", True, f"API key accepted ({len(scopes)} scopes, mail.send among them)")


def _one_machine(app: App) -> bool:
    """A demo or test run (``RAPID_ENV``), where http links and throwaway keys are fine."""
    return app.settings.environment in ("demo", "test")


def check_public_url(app: App) -> Check:
    """PUBLIC_BASE_URL is https, as Twilio's callbacks and unsubscribe links need, except
    in a demo or test run; and not loopback outside them (nobody outside could reach it)."""
    url = app.settings.public_base_url
    parts = urlsplit(url)
    if _one_machine(app):
        return Check("public_base_url", True, f"{url} ({app.settings.environment} run)")
    if parts.scheme != "https":
        return Check(
            "public_base_url", False, f"{url} is not https: unsubscribe links and callbacks need it"
        )
    if parts.hostname in LOOPBACK_HOSTS:
        return Check("public_base_url", False, f"{url} is loopback: Twilio cannot call it back")
    return Check("public_base_url", True, url)


def check_secret_key(app: App) -> Check:
    """RAPID_SECRET_KEY is set, long enough, and not another secret."""
    s = app.settings
    key = s.secret_key
    if not key:
        if _one_machine(app):
            return Check("secret_key", True, f"unset: a throwaway key ({s.environment} run)")
        return Check("secret_key", False, "RAPID_SECRET_KEY is not set (unsubscribe links need it)")
    if len(key.encode()) < SECRET_KEY_MIN_BYTES:
        return Check(
            "secret_key", False, f"RAPID_SECRET_KEY is shorter than {SECRET_KEY_MIN_BYTES} bytes"
        )
    if key in (s.twilio_auth_token, s.sendgrid_api_key, s.api_token):
        return Check("secret_key", False, "RAPID_SECRET_KEY reuses another secret")
    return Check("secret_key", True, f"set, {len(key.encode())} bytes")


def check_webhook_keys(app: App) -> Check:
    """Webhooks can be verified: Twilio's with the auth token, SendGrid's with its public key."""
    s = app.settings
    problems = []
    if s.sendgrid_api_key and not s.sendgrid_webhook_public_key:
        problems.append("SENDGRID_WEBHOOK_PUBLIC_KEY is not set: SendGrid events are refused")
    if s.twilio_account_sid and not s.twilio_auth_token:
        problems.append("TWILIO_AUTH_TOKEN is not set: Twilio webhooks cannot be verified")
    if problems:
        return Check("webhook_keys", False, "; ".join(problems))
    return Check("webhook_keys", True, "Twilio and SendGrid webhooks can be verified")


#: Every check, in the order they are printed.
CHECKS: tuple[Callable[[App], Check], ...] = (
    check_database,
    check_redis,
    check_queues,
    check_topics,
    check_twilio,
    check_sendgrid,
    check_public_url,
    check_secret_key,
    check_webhook_keys,
)


def run_checks(app: App, checks: tuple[Callable[[App], Check], ...] = CHECKS) -> list[Check]:
    """Run every check; one that raises fails with the error's first line."""
    results = []
    for check in checks:
        name = check.__name__.removeprefix("check_")
        try:
            results.append(check(app))
        except Exception as exc:
            results.append(Check(name, False, _first_line(exc)))
    return results


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print {ok, checks: [...]} as JSON.")
@pass_app
def doctor(app: App, as_json: bool) -> None:
    """Check every dependency and credential; one line each, exit 1 if any fails."""
    results = run_checks(app)
    ok = all(r.ok for r in results)
    if as_json:
        payload: dict[str, Any] = {"ok": ok, "checks": [asdict(r) for r in results]}
        echo_json(payload)
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            click.echo(f"{'ok  ' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}")
    if not ok:
        sys.exit(1)


COMMANDS = [doctor]
