"""The alert: what is published to an alert topic (contract §4), as a pydantic model.

Validation happens once, at intake; an alert that fails it is never retried (it goes to the
dead-letter queue with the reason), so every rule that can be checked up front is checked
here, templates included.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from messaging.content.templates import (
    EMAIL_RENDERED_MAX_CHARS,
    SMS_RENDERED_MAX_CHARS,
    SUBJECT_RENDERED_MAX_CHARS,
    TEMPLATE_MAX_CHARS,
    check_template,
)
from messaging.errors import InputError

#: The alert id doubles as the blast id and as SQS/Redis key material.
ALERT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
Priority = Literal["urgent", "normal", "bulk"]
#: Longest SMS body template we accept: 10 segments of GSM-7. Longer texts are a paste error.
SMS_BODY_MAX_CHARS = SMS_RENDERED_MAX_CHARS
#: Longest email subject template (RFC 5322's line limit).
EMAIL_SUBJECT_MAX_CHARS = SUBJECT_RENDERED_MAX_CHARS
#: Longest email text or HTML template, in characters.
EMAIL_BODY_MAX_CHARS = TEMPLATE_MAX_CHARS
#: Longest MMS media URL we accept (Twilio takes URLs, not bodies; longer is a paste error).
MEDIA_URL_MAX_CHARS = 2048
#: A custom field's name: what the import keeps a column under (lower case, ``_``).
FIELD_NAME_PATTERN = r"^[a-z0-9_]{1,64}$"
#: Most values one ``audience.fields`` entry may list.
FIELD_VALUES_MAX = 1000
#: Validation context of an alert read back from the store (``Alert.model_validate_json(raw,
#: context=STORED)``): it passed every check when it was accepted. Its templates are not
#: rendered again on each read: that costs CPU, and a render's time limit (the thread's CPU
#: time, a garbage collection included) once refused a stored blast on a busy host.
STORED: dict[str, Any] = {"stored": True}


def _accepting(info: ValidationInfo) -> bool:
    """Whether this validation accepts a new alert (templates checked), not a stored one."""
    return not (info.context or {}).get("stored")


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as "sms_body" must not silently send nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SmsContent(_Strict):
    """The SMS part: a Jinja2 template over the supporter's fields."""

    body: str = Field(min_length=1, max_length=SMS_BODY_MAX_CHARS)
    #: Contract §4: an MMS image; sent as Twilio's ``MediaUrl`` and priced as an MMS.
    media_url: str | None = Field(default=None, max_length=MEDIA_URL_MAX_CHARS)

    @field_validator("media_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value):
            raise ValueError("media_url must be an https URL")
        return value

    @property
    def is_mms(self) -> bool:
        """True when the message carries media (billed per message, not per segment)."""
        return self.media_url is not None

    @field_validator("body")
    @classmethod
    def _compiles(cls, value: str, info: ValidationInfo) -> str:
        if not _accepting(info):
            return value
        return check_template(value, "sms.body", max_chars=SMS_RENDERED_MAX_CHARS)


class EmailContent(_Strict):
    """The email part; at least one of text and html."""

    subject: str = Field(min_length=1, max_length=EMAIL_SUBJECT_MAX_CHARS)
    text: str | None = Field(default=None, max_length=EMAIL_BODY_MAX_CHARS)
    html: str | None = Field(default=None, max_length=EMAIL_BODY_MAX_CHARS)
    #: Opt-in: its http(s) links become tracked short links, as SMS links always do
    #: (messaging/content/links.py); off by default, mail clients show the long link's domain.
    track_links: bool = False

    @model_validator(mode="after")
    def _has_a_body(self, info: ValidationInfo) -> EmailContent:
        if not self.text and not self.html:
            raise ValueError("email needs text or html")
        if not _accepting(info):
            return self
        limits = {
            "subject": SUBJECT_RENDERED_MAX_CHARS,
            "text": EMAIL_RENDERED_MAX_CHARS,
            "html": EMAIL_RENDERED_MAX_CHARS,
        }
        for name, max_chars in limits.items():
            value = getattr(self, name)
            if value:
                check_template(value, f"email.{name}", max_chars=max_chars, html=name == "html")
        return self


def _as_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


class FromBlast(_Strict):
    """``audience.from_blast``: the recipients an earlier blast reached."""

    id: str = Field(pattern=ALERT_ID_PATTERN)
    #: True: only those who clicked a tracked link; False: only those who did not; absent:
    #: everyone it reached.
    clicked: bool | None = None


class Audience(_Strict):
    """An optional filter over the topic's subscribers; every given list must match."""

    postal_codes: list[str] = Field(default_factory=list, max_length=10_000)
    states: list[str] = Field(default_factory=list, max_length=60)
    tags: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("states")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [s.strip().upper() for s in value]

    @field_validator("tags")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [t.strip().lower() for t in value]

    @field_validator("postal_codes")
    @classmethod
    def _zip5(cls, value: list[str]) -> list[str]:
        return [p.strip()[:5] for p in value]

    #: Contract §4: exact tag matches. Every one of ``tags_all``, at least one of
    #: ``tags_any`` (as ``tags``), none of ``tags_none``.
    tags_all: list[str] = Field(default_factory=list, max_length=100)
    tags_any: list[str] = Field(default_factory=list, max_length=100)
    tags_none: list[str] = Field(default_factory=list, max_length=100)
    #: Contract §4: ``{"name": value or [values]}`` over the import's custom columns; every
    #: name must match one of its values (compared as text, as the CSV held them).
    fields: dict[str, list[str]] = Field(default_factory=dict, max_length=20)
    #: A follow-up: only recipients a blast reached (sent or delivered), optionally only
    #: those who clicked (or did not click) one of its tracked links.
    from_blast: FromBlast | None = None

    @field_validator("tags_all", "tags_any", "tags_none")
    @classmethod
    def _lower_tags(cls, value: list[str]) -> list[str]:
        return [t.strip().lower() for t in value]

    @field_validator("fields", mode="before")
    @classmethod
    def _field_values(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic reports the type
        out: dict[Any, Any] = {}
        for name, wanted in value.items():
            if not isinstance(name, str) or not re.fullmatch(FIELD_NAME_PATTERN, name.lower()):
                raise ValueError(f"field name {name!r}: lower-case letters, digits and _")
            values = wanted if isinstance(wanted, list) else [wanted]
            if not values or len(values) > FIELD_VALUES_MAX:
                raise ValueError(f"field {name!r}: 1 to {FIELD_VALUES_MAX} values")
            if not all(isinstance(v, str | int | float | bool) for v in values):
                raise ValueError(f"field {name!r}: values must be text or numbers")
            # The import keeps every value as the text the CSV held.
            out[name.lower()] = [_as_text(v) for v in values]
        return out


class BreakerSettings(_Strict):
    """Contract §13: this alert's circuit breakers (any subset; the rest from the fleet's)."""

    #: Finished sends the shares are taken over.
    window: int | None = Field(default=None, ge=50, le=100_000)
    #: Shares (0..1] past which the blast pauses itself.
    carrier_filtering: float | None = Field(default=None, gt=0, le=1)
    failure_rate: float | None = Field(default=None, gt=0, le=1)
    optout_rate: float | None = Field(default=None, gt=0, le=1)


class Variant(_Strict):
    """One of an alert's A/B variants: its own SMS and/or email part; a part it leaves out
    is the alert's own."""

    sms: SmsContent | None = None
    email: EmailContent | None = None


#: Contract §4: an alert's variants, 2 to 5.
VARIANTS_MIN, VARIANTS_MAX = 2, 5


class PickWinner(_Strict):
    """``pick_winner``: send the variants to a test share first; after ``after``, the variant
    with the most clicks goes to everyone else."""

    #: How long the test share has (ISO 8601 duration, e.g. ``PT10M``).
    after: timedelta = Field(ge=timedelta(seconds=1), le=timedelta(days=7))
    #: What decides (clicks on the tracked links).
    by: Literal["clicks"] = "clicks"
    #: The share of recipients who get the test (split between the variants).
    share: float = Field(default=0.2, gt=0, lt=1)


class Alert(_Strict):
    """A validated alert. ``alert_id`` is filled in by intake when the publisher left it out."""

    alert_id: str = Field(pattern=ALERT_ID_PATTERN)
    priority: Priority = "normal"
    sms: SmsContent | None = None
    email: EmailContent | None = None
    audience: Audience | None = None
    send_by: AwareDatetime | None = None
    #: Contract §4: a scheduled blast; ``scheduled`` until then (``rapid scheduler`` releases
    #: it), cancelable meanwhile.
    send_at: AwareDatetime | None = None
    test_recipients: list[str] = Field(default_factory=list, max_length=100)
    dry_run: bool = False
    #: Extension: the alert topic, for raw SNS delivery where no TopicArn travels along.
    topic: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,64}$")
    #: Contract §11: the operator who asked for this alert; absent: ``sns``.
    requested_by: str | None = Field(default=None, min_length=1, max_length=64)
    #: Extension: where our own publishers sent it from; absent: straight to SNS.
    requested_via: Literal["cli", "api", "dashboard"] | None = None
    #: Contract §13: thresholds of the blast's circuit breakers (messaging/safety/breakers.py).
    breakers: BreakerSettings | None = None
    #: Contract §4: a recipient whose SMS quiet hours would hold gets the email part now
    #: instead (the SMS row ends ``fallback``).
    quiet_hours_fallback: Literal["email"] | None = None
    #: Contract §4: recipients split evenly and reproducibly between these (messaging/
    #: variants.py); a channel the alert itself leaves out is taken from the first variant.
    variants: list[Variant] | None = Field(
        default=None, min_length=VARIANTS_MIN, max_length=VARIANTS_MAX
    )
    #: Issue #19: test the variants on a share first, then send the winner to the rest
    #: (messaging/blasts/winner.py).
    pick_winner: PickWinner | None = None

    @model_validator(mode="before")
    @classmethod
    def _channels_from_variants(cls, data: Any) -> Any:
        # Every part of the pipeline that asks "does this alert send SMS" reads alert.sms;
        # a variants-only alert answers it with its first variant's parts.
        if isinstance(data, dict) and isinstance(data.get("variants"), list):
            first = data["variants"][0] if data["variants"] else None
            if isinstance(first, dict):
                data = dict(data)
                for channel in ("sms", "email"):
                    if data.get(channel) is None and first.get(channel) is not None:
                        data[channel] = first[channel]
        return data

    @model_validator(mode="after")
    def _has_a_channel(self) -> Alert:
        if self.pick_winner is not None and not self.variants:
            raise ValueError("pick_winner needs variants")
        for i, variant in enumerate(self.variants or ()):
            for channel in ("sms", "email"):
                if getattr(variant, channel) is not None and getattr(self, channel) is None:
                    raise ValueError(f"variants.{i} has {channel} but the first variant has not")
        if self.sms is None and self.email is None:
            raise ValueError("an alert needs at least one of sms and email")
        if self.quiet_hours_fallback == "email" and (self.sms is None or self.email is None):
            raise ValueError('quiet_hours_fallback "email" needs both an sms and an email part')
        if self.send_at is not None and self.send_by is not None and self.send_at >= self.send_by:
            raise ValueError("send_at must be before send_by")
        return self

    def scheduled(self, now: datetime | None = None) -> bool:
        """True while ``send_at`` is ahead: the blast waits, ``scheduled``. A dry run reports
        now (its figures are what a send would do at the time of asking)."""
        return (
            self.send_at is not None
            and not self.dry_run
            and (now or datetime.now(UTC)) < self.send_at
        )

    @property
    def falls_back_to_email(self) -> bool:
        """True when SMS that quiet hours would hold go as the alert's email instead."""
        return self.quiet_hours_fallback == "email"

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels this alert sends on, in a fixed order."""
        return tuple(c for c in ("sms", "email") if getattr(self, c) is not None)

    def expired(self, now: datetime | None = None) -> bool:
        """True once ``send_by`` has passed."""
        return self.send_by is not None and (now or datetime.now(UTC)) >= self.send_by

    def to_json(self) -> str:
        """Canonical JSON, as stored with the blast."""
        return self.model_dump_json(exclude_none=True)


def new_alert_id(topic: str) -> str:
    """A fresh alert id for a publisher that did not choose one: readable, sortable, unique."""
    import secrets

    return f"{topic}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _nul_at(document: dict[str, Any]) -> str | None:
    """Where a NUL character of a JSON document is (``audience.tags.0``), if any.
    A walk with a stack of its own: the parser accepts nesting deeper than recursion."""
    stack: list[tuple[str, Any]] = [("alert", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return path
                stack.append((key if path == "alert" else f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}", item) for i, item in enumerate(value))
    return None


def parse_alert(payload: str | bytes, *, fallback_id: str, topic: str | None = None) -> Alert:
    """Validate an alert document; :class:`InputError` with every problem in one line if bad."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"alert is not valid JSON: {exc}") from None
    except RecursionError:  # [[[[…]]]] thousands deep: a hostile document, not a retry
        raise InputError("alert is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError("alert must be a JSON object")
    if (where := _nul_at(data)) is not None:
        # PostgreSQL text cannot hold U+0000: a filter value carrying one failed the
        # audience query (a DataError, retried as if transient) instead of being refused.
        raise InputError(f"invalid alert: {where}: text must not contain U+0000 (NUL)")
    data.setdefault("alert_id", fallback_id)
    if topic is not None:
        if data.get("topic") not in (None, topic):
            raise InputError(f"alert names topic {data['topic']!r} but was published to {topic!r}")
        data["topic"] = topic
    try:
        return Alert.model_validate(data)
    except RecursionError:
        raise InputError("invalid alert: nested too deeply") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'alert'}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"invalid alert: {problems}") from None
