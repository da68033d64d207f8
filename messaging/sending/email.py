"""Sending one batch of email: personalised parts, footer, one-click unsubscribe, one call."""

from __future__ import annotations

import html as html_lib
import time
from dataclasses import dataclass
from email.utils import parseaddr

import structlog

from messaging.blasts.lifecycle import RowState
from messaging.blasts.winner import held_variants
from messaging.content.alert import Alert, EmailContent
from messaging.content.links import ShortLinks, tracked_templates
from messaging.content.templates import (
    Field,
    RenderError,
    assemble,
    field_value,
    header_line,
    plain_parts,
    render,
    template_names,
)
from messaging.content.unsubscribe import UnsubscribeTokens
from messaging.content.variants import email_content, recipient_variant
from messaging.errors import PermanentSendError, ProviderAuthError, TransientSendError
from messaging.ports import TEMPLATE_FIELDS, BlastRecord, Claimed, Outcome, SendWork
from messaging.providers.base import EmailBatch, EmailRecipient, EmailTransport, SharedBodies
from messaging.sending.common import (
    PACING_HORIZON_S,
    BatchReport,
    LateSuppressions,
    SendContext,
    Waiting,
    finish_batch,
    send_time_checks,
    start_batch,
)

log = structlog.get_logger(__name__)

#: Re-queue delay when SendGrid kept failing transiently.
TRANSIENT_RETRY_DELAY_S = 15.0


@dataclass(frozen=True, slots=True)
class EmailConfig:
    """What the email sender needs from the settings."""

    email_from: str
    org_name: str
    org_postal_address: str
    public_base_url: str
    tokens: UnsubscribeTokens
    rate_per_s: float = 1000.0

    @property
    def unsubscribe_base(self) -> str:
        """Every unsubscribe link up to its token."""
        return f"{self.public_base_url}/unsubscribe/"

    def unsubscribe_url(self, email: str, blast_id: str) -> str:
        """The one-click unsubscribe link of one recipient."""
        return f"{self.unsubscribe_base}{self.tokens.make(email, blast_id)}"


def with_footer(
    config: EmailConfig, text: str | None, html: str | None, url: str
) -> tuple[str | None, str | None]:
    """Add the CAN-SPAM footer (sender identity, postal address, unsubscribe) to both parts."""
    if text is not None:
        text = f"{text}\n\n--\n{config.org_name}\n{config.org_postal_address}\nUnsubscribe: {url}\n"
    if html is not None:
        e = html_lib.escape
        html = (
            f'{html}\n<hr><p style="font-size:12px;color:#666">{e(config.org_name)}<br>'
            f'{e(config.org_postal_address)}<br><a href="{e(url)}">Unsubscribe</a></p>'
        )
    return text, html


#: Marks our substitution tags. A supporter field containing it gets bodies of its own, so a
#: value can never be mistaken for another tag.
TAG_MARK = "-rr."
#: Stands for the recipient's unsubscribe token in both shared bodies: the link's base is
#: in the bodies, and a token (base64url and dots) reads the same in text and in HTML, so
#: one substitution serves both parts.
TOKEN_TAG = f"{TAG_MARK}unsubscribe-"


def _tag(name: str, html: bool) -> str:
    return f"{TAG_MARK}{name}.{'h' if html else 't'}-"


@dataclass(frozen=True, slots=True)
class SharedPlan:
    """A blast whose bodies are plain templates: shipped once per call, fields substituted."""

    bodies: SharedBodies
    #: ``(field, tag)`` of each field the text body uses, substituted as Jinja prints it.
    text_tags: tuple[tuple[str, str], ...]
    #: ``(field, tag)`` of each field the HTML body uses, substituted HTML-escaped.
    html_tags: tuple[tuple[str, str], ...]
    #: The subject as plain parts (assembled without Jinja), or None to render it.
    subject: tuple[str | Field, ...] | None


def shared_plan(config: EmailConfig, content: EmailContent) -> SharedPlan | None:
    """The shared-bodies plan of an alert's email, or None if a body is not plain."""
    text_parts = plain_parts(content.text) if content.text else ()
    html_parts = plain_parts(content.html) if content.html else ()
    if text_parts is None or html_parts is None:
        return None

    def tagged(parts: tuple[str | Field, ...], html: bool) -> str:
        if any(TAG_MARK in p for p in parts if isinstance(p, str)):
            raise ValueError("template text looks like a tag")
        return "".join(_tag(p.name, html) if isinstance(p, Field) else p for p in parts)

    def tags(parts: tuple[str | Field, ...], html: bool) -> tuple[tuple[str, str], ...]:
        # Each field once, in a fixed order: a missing one fails the same way every time.
        names = sorted({p.name for p in parts if isinstance(p, Field)})
        return tuple((name, _tag(name, html)) for name in names)

    try:
        text = tagged(text_parts, False) if content.text else None
        html = tagged(html_parts, True) if content.html else None
    except ValueError:
        return None
    url = f"{config.unsubscribe_base}{TOKEN_TAG}"
    text, html = with_footer(config, text, html, url)
    return SharedPlan(
        SharedBodies(text, html),
        tags(text_parts, False),
        tags(html_parts, True),
        plain_parts(content.subject),
    )


def email_fields(alert: Alert) -> tuple[str, ...]:
    """The supporter fields an alert's email parts read (its variants' too): all a claim
    needs to read. Every field when a part does not parse (it fails when rendered)."""
    used: set[str] = set()
    contents = [alert.email, *(v.email for v in alert.variants or ())]
    for content in contents:
        if content is None:
            continue
        for source in (content.subject, content.text, content.html):
            names = template_names(source) if source else frozenset()
            if names is None:
                return TEMPLATE_FIELDS
            used |= names
    return tuple(f for f in TEMPLATE_FIELDS if f in used)


def _recipient(
    blast_id: str,
    c: Claimed,
    unsubscribe_url: str,
    subject: str,
    text: str | None,
    html: str | None,
    substitutions: dict[str, str],
) -> EmailRecipient:
    """One personalization: one-click unsubscribe headers and the ids events come back with."""
    return EmailRecipient(
        to=c.destination,
        subject=subject,
        text=text,
        html=html,
        headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        custom_args={"blast_id": blast_id, "supporter_id": str(c.supporter_id)},
        substitutions=substitutions,
    )


class EmailSender:
    """Sends email batches through an :class:`EmailTransport`."""

    def __init__(
        self,
        ctx: SendContext,
        transport: EmailTransport,
        config: EmailConfig,
        *,
        links: ShortLinks | None = None,
    ) -> None:
        self._ctx = ctx
        #: Tracked short links, for email parts that opt in (``track_links``).
        self._links = links
        self._transport = transport
        self._config = config
        self._from_name, self._from_email = parseaddr(config.email_from)
        self._unsubscribe_base = config.unsubscribe_base
        self._plans: dict[str, SharedPlan | None] = {}
        self._fields: dict[str, tuple[str, ...]] = {}

    def _claim_fields(self, blast_id: str) -> tuple[str, ...]:
        if blast_id not in self._fields:
            blast = self._ctx.blast(blast_id)
            if blast is None:  # start_batch skips it
                return TEMPLATE_FIELDS
            self._fields[blast_id] = email_fields(blast.alert)
        return self._fields[blast_id]

    def _plan(self, blast_id: str) -> SharedPlan | None:
        if blast_id not in self._plans:
            blast = self._ctx.blast(blast_id)
            assert blast is not None and blast.alert.email is not None
            alert = blast.alert
            # Variants and tracked links differ per recipient: each gets bodies of its own.
            personal = alert.variants or (self._links and tracked_templates(alert, "email"))
            self._plans[blast_id] = (
                None if personal or alert.email is None else shared_plan(self._config, alert.email)
            )
        return self._plans[blast_id]

    def _shared_recipient(self, plan: SharedPlan, blast_id: str, c: Claimed) -> EmailRecipient:
        """One recipient of shared bodies: only its fields and unsubscribe token travel."""
        fields = c.fields
        subs: dict[str, str] = {}
        for tags, html in ((plan.text_tags, False), (plan.html_tags, True)):
            for name, tag in tags:
                if name not in fields:
                    raise RenderError(f"template failed: '{name}' is undefined")
                value = field_value(fields[name], html=html)
                if TAG_MARK in value:  # HTML escaping neither makes nor breaks the mark
                    return self._recipient(blast_id, c)  # rare: bodies of its own
                subs[tag] = value
        token = self._config.tokens.make(c.destination, blast_id)
        subs[TOKEN_TAG] = token
        if plan.subject is not None:
            subject = assemble(plan.subject, fields)
        else:
            blast = self._ctx.blast(blast_id)
            assert blast is not None and blast.alert.email is not None
            subject = render(blast.alert.email.subject, fields)
        url = f"{self._unsubscribe_base}{token}"
        return _recipient(blast_id, c, url, header_line(subject), None, None, subs)

    def _recipient(self, blast_id: str, c: Claimed) -> EmailRecipient:
        blast = self._ctx.blast(blast_id)
        assert blast is not None and blast.alert.email is not None
        alert = blast.alert
        store = self._links.store if self._links is not None else None
        held = held_variants(store, alert, blast_id, "email", [c.supporter_id]).get(c.supporter_id)
        variant = recipient_variant(alert, c.supporter_id, held)
        content = email_content(alert, variant) or alert.email
        assert content is not None
        subject = header_line(render(content.subject, c.fields))
        text = render(content.text, c.fields) if content.text else None
        body_html = render(content.html, c.fields, html=True) if content.html else None
        if self._links is not None and content.track_links:
            links = self._links.for_alert(alert, "email")
            text = links.rewrite(text, c.supporter_id) if text else None
            body_html = links.rewrite(body_html, c.supporter_id) if body_html else None
        url = self._config.unsubscribe_url(c.destination, blast_id)
        text, body_html = with_footer(self._config, text, body_html, url)
        return _recipient(blast_id, c, url, subject, text, body_html, {})

    def process(self, work: SendWork) -> BatchReport:
        """Handle one unit of email send work."""
        ctx, report = self._ctx, BatchReport()
        started = start_batch(ctx, work, report, self._claim_fields(work.blast_id))
        if started is None:
            return report
        blast, claimed = started
        try:
            self._process_claimed(work, blast, claimed, report)
        finally:
            # Rows without an outcome (a crash mid-batch) now have no live owner: the sweep
            # settles them, instead of them waiting for a worker that forgot them.
            ctx.inflight.release(work.blast_id, work.channel, work.supporter_ids)
        return report

    def _process_claimed(
        self, work: SendWork, blast: BlastRecord, claimed: list[Claimed], report: BatchReport
    ) -> None:
        ctx = self._ctx
        late = LateSuppressions(ctx, "email")  # before the check: a STOP after it moves the version
        to_send, outcomes = send_time_checks(ctx, blast, "email", claimed, report)
        recipients: list[tuple[int, EmailRecipient]] = []
        plan = self._plan(work.blast_id)
        for c in to_send:
            try:
                recipient = (
                    self._shared_recipient(plan, work.blast_id, c)
                    if plan is not None
                    else self._recipient(work.blast_id, c)
                )
                recipients.append((c.supporter_id, recipient))
            except RenderError as exc:
                outcomes.append(
                    Outcome(c.supporter_id, RowState.FAILED, error_code="render", error=str(exc))
                )
                report.add(RowState.FAILED)

        waiting: list[int] = []
        if recipients:
            reservation = ctx.limiter.reserve(
                ctx.names.redis_key("rate", "email"),
                self._config.rate_per_s,
                n=1,
                cost=len(recipients),
                # A call of 1,000 recipients books 1,000/rate seconds of the schedule: the
                # horizon must hold at least one such call, or batches would only bounce.
                horizon_s=max(
                    PACING_HORIZON_S[work.priority], 1.5 * len(recipients) / self._config.rate_per_s
                ),
            )
            late.watch([r.to for _, r in recipients])
            if reservation.granted:
                # Wait for the slot here, then look again: the blast may have been stopped
                # or an address unsubscribed meanwhile.
                time.sleep(max(0.0, reservation.slots_s[0] - time.time()))
            if reservation.granted == 0 or not ctx.gate(blast.blast_id, blast.status):
                waiting = [sid for sid, _ in recipients]
            else:
                stopped = late.refresh()  # an unsubscribe since the check: drop those now
                if stopped:
                    outcomes += [
                        Outcome(sid, RowState.SUPPRESSED, error="suppressed while queued to send")
                        for sid, r in recipients
                        if r.to in stopped
                    ]
                    recipients = [(sid, r) for sid, r in recipients if r.to not in stopped]
                if recipients:
                    shared = plan.bodies if plan is not None else None
                    outcomes += self._send(recipients, shared, report, waiting)
        delay = TRANSIENT_RETRY_DELAY_S if report.waiting.get(Waiting.TRANSIENT) else 1.0
        finish_batch(ctx, work, outcomes, waiting, delay, report)
        log.info(
            "email.batch",
            blast_id=work.blast_id,
            claimed=report.claimed,
            outcomes=report.by_state,
            requeued=report.requeued,
        )

    def _send(
        self,
        recipients: list[tuple[int, EmailRecipient]],
        shared: SharedBodies | None,
        report: BatchReport,
        waiting: list[int],
    ) -> list[Outcome]:
        batch = EmailBatch(
            from_email=self._from_email,
            from_name=self._from_name or None,
            recipients=[r for _, r in recipients],
            categories=("rapid-response",),
            shared=shared,
        )
        try:
            calls = self._transport.send_batch(batch)
        except Exception as exc:
            # A bug or a surprise: which calls went out is unknown. Their rows stay
            # `sending`; the batch gives them up (finally in process) and the sweep settles
            # them as lost in flight, rather than this batch being retried whole.
            log.error("email.batch_crashed", error=str(exc)[:300], error_type=type(exc).__name__)
            report.wait(Waiting.IN_DOUBT, len(recipients))
            return []
        outcomes: list[Outcome] = []
        # Each call settles its own recipients, once: a later call's failure never re-sends
        # what an earlier call delivered.
        for call in calls:
            mine = (
                recipients
                if len(call.indices) == len(recipients)  # the usual case: one call for all
                else [recipients[i] for i in call.indices]
            )
            error = call.error
            if error is None:
                report.add(RowState.SENT, len(mine))
                sent, message_id, sender = RowState.SENT, call.message_id, self._from_email
                outcomes += [
                    Outcome(sid, sent, provider_message_id=message_id, sender=sender)
                    for sid, _ in mine
                ]
            elif isinstance(error, ProviderAuthError):
                # Not the recipients' fault: they wait (pending) for the fixed key.
                report.wait(Waiting.AUTH, len(mine))
                waiting.extend(sid for sid, _ in mine)
                self._ctx.provider_refused("email", error)
            elif isinstance(error, TransientSendError):
                log.warning("email.transient", error=str(error), code=error.code)
                report.wait(Waiting.TRANSIENT, len(mine))
                waiting.extend(sid for sid, _ in mine)
            elif isinstance(error, PermanentSendError) and len(mine) > 1:
                # One malformed address makes SendGrid refuse the whole request: split until
                # the bad one fails alone and everyone else in this call is served.
                half = len(mine) // 2
                outcomes += self._send(mine[:half], shared, report, waiting)
                outcomes += self._send(mine[half:], shared, report, waiting)
            else:
                report.add(RowState.FAILED, len(mine))
                outcomes += [
                    Outcome(sid, RowState.FAILED, error_code=error.code, error=str(error))
                    for sid, _ in mine
                ]
        return outcomes
