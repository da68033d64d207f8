"""The one application object: settings plus lazily built clients, wired in one place.

Entry points build it with :meth:`App.from_environ`; everything below receives what it needs
from here (STYLE rule 4). Clients are created on first use, so ``rapid --help`` or
``rapid optout check`` never opens an AWS or Redis connection it does not need.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from config.names import Names
from config.settings import Settings, load_settings
from messaging.errors import ConfigError

if TYPE_CHECKING:
    from messaging.access.audit import AuditLog
    from messaging.access.operators import Operators
    from messaging.blasts.approval import Approvals
    from messaging.blasts.blast_control import BlastActions
    from messaging.blasts.intake import Intake
    from messaging.compliance.frequency_caps import FrequencyCaps
    from messaging.compliance.replies import ReplyHandler
    from messaging.compliance.suppression import NotifyingSuppressionList
    from messaging.content.links import ShortLinks
    from messaging.ports import AlertPublisher, BlastStore, LedgerStore
    from messaging.safety.breakers import Breakers
    from messaging.safety.in_doubt import InDoubtSettler
    from messaging.safety.provider_auth import ProviderAuthPause
    from messaging.sending.common import SendContext
    from messaging.sending.email import EmailSender
    from messaging.sending.sms import SmsSender
    from messaging.store import Stores
    from queues.flow.control import RedisBlastControl
    from queues.flow.inflight import RedisInFlight
    from queues.lanes import Lanes


class App:
    """Settings and the clients built from them."""

    def __init__(self, settings: Settings, *, redis_client: Any = None) -> None:
        self.settings = settings
        self.names = Names(settings.prefix)
        self._closers: list[Any] = []
        #: Connections the process may open at most (None: the store's default, 5 pooled
        #: and 10 more at peaks); an entry point whose threads must share a few sets it
        #: before first use of :attr:`engine`.
        self.db_connections_max: int | None = None
        if redis_client is not None:  # e.g. the demo's embedded stand-in
            self.__dict__["redis"] = redis_client

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> App:
        """Read the settings once from the process environment."""
        return cls(load_settings(environ))

    # --- clients ------------------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        """The system of record."""
        from messaging.store.db import create_db_engine

        if self.db_connections_max is None:
            return create_db_engine(self.settings.database_url)
        return create_db_engine(
            self.settings.database_url, pool_size=self.db_connections_max, max_overflow=0
        )

    @cached_property
    def aws(self) -> tuple[Any, Any]:
        """``(sns, sqs)`` boto3 clients."""
        from queues.aws import make_clients

        return make_clients(self.settings)

    @property
    def sns(self) -> Any:
        """The SNS client."""
        return self.aws[0]

    @property
    def sqs(self) -> Any:
        """The SQS client."""
        return self.aws[1]

    @cached_property
    def publisher(self) -> AlertPublisher:
        """Publishes alerts to their SNS topics (the CLI, the API and the demo share it)."""
        from queues.provision import SnsPublisher

        return SnsPublisher(self.sns)

    @cached_property
    def redis(self) -> Any:
        """Redis: limiter, kill switch, dramatiq broker."""
        import redis

        return redis.Redis.from_url(
            self.settings.redis_url,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
        )

    # --- the parts ----------------------------------------------------------------------

    @cached_property
    def stores(self) -> Stores:
        """Every store of the system of record, over :attr:`engine`."""
        from messaging.store import open_stores

        return open_stores(self.engine)

    @property
    def blasts(self) -> BlastStore:
        """Blasts in the system of record."""
        return self.stores.blasts

    @property
    def ledger(self) -> LedgerStore:
        """The delivery ledger."""
        return self.stores.ledger

    @cached_property
    def suppressions(self) -> NotifyingSuppressionList:
        """The suppression list; every addition is announced to the senders through Redis."""
        from messaging.compliance.suppression import NotifyingSuppressionList

        return NotifyingSuppressionList(self.stores.suppressions, self._announce_suppression)

    def _announce_suppression(self) -> None:
        import contextlib

        import redis

        # The list itself is written; senders still check it at every batch.
        with contextlib.suppress(redis.exceptions.RedisError):
            self.control.bump_suppressions()

    @cached_property
    def lanes(self) -> Lanes:
        """The send lanes on dramatiq's Redis broker."""
        from queues.lanes import Lanes, make_broker

        return Lanes(make_broker(self.redis, self.names))

    @cached_property
    def control(self) -> RedisBlastControl:
        """The fleet-wide kill switch."""
        from queues.flow.control import RedisBlastControl

        return RedisBlastControl(self.redis, self.names)

    @cached_property
    def actions(self) -> BlastActions:
        """Pause, resume, cancel, re-drive."""
        from messaging.blasts.blast_control import BlastActions

        return BlastActions(self.blasts, self.ledger, self.lanes, self.control)

    @cached_property
    def operators(self) -> Operators:
        """Operators and their tokens (``RAPID_API_TOKEN`` is the admin ``bootstrap``)."""
        from messaging.access.operators import Operators

        return Operators(self.stores.operators, bootstrap_token=self.settings.api_token)

    @cached_property
    def audit(self) -> AuditLog:
        """The append-only audit log."""
        from messaging.access.audit import AuditLog

        return AuditLog(self.stores.audit)

    @cached_property
    def approvals(self) -> Approvals:
        """Approve and reject blasts awaiting a second operator."""
        from messaging.blasts.approval import Approvals
        from messaging.blasts.lifecycle import BlastLifecycle

        lifecycle = BlastLifecycle(self.blasts, self.ledger, self.control, self.lanes)
        return Approvals(self.blasts, lifecycle, self.audit)

    @cached_property
    def replies(self) -> ReplyHandler:
        """Inbound SMS: opt-outs in the supporters' words, HELP, START, review (§12)."""
        from messaging.compliance.replies import ReplyHandler, ReplyTexts

        texts = ReplyTexts(self.settings.org_name, self.settings.org_help_contact)
        return ReplyHandler(self.stores.replies, self.suppressions, texts)

    @cached_property
    def intake(self) -> Intake:
        """The intake service."""
        from messaging.blasts.approval import ApprovalGate
        from messaging.blasts.dry_run import DryRunConfig
        from messaging.blasts.intake import Intake

        s = self.settings
        sms_rate = s.sms_rate_account
        if s.twilio_from_numbers and not s.twilio_messaging_service_sid:
            sms_rate = min(sms_rate, s.sms_rate_per_sender * len(s.twilio_from_numbers))
        dry_run = DryRunConfig(
            org_name=s.org_name or "",
            sms_rate_per_s=sms_rate,
            email_rate_per_s=s.email_rate,
            sms_price_per_segment=s.sms_segment_price,
            email_price=s.email_price,
            mms_price=s.mms_price,
            quiet_hours=s.quiet_hours,
            short_link_base_url=s.short_link_base_url or s.public_base_url,
        )
        from queues.envelope import unwrap

        names = self.names
        return Intake(
            lambda body: unwrap(body, names),
            self.blasts,
            self.ledger,
            self.lanes,
            self.control,
            dry_run,
            approval=ApprovalGate(s.approval_threshold, dry_run),
            audit=self.audit,
            caps=self.frequency_caps,
            topics=self.stores.topics,
        )

    @cached_property
    def frequency_caps(self) -> FrequencyCaps | None:
        """``SMS_FREQUENCY_CAP`` / ``EMAIL_FREQUENCY_CAP`` over the fleet's Redis; None when
        both are off."""
        from messaging.compliance.frequency_caps import FrequencyCaps
        from queues.flow.caps import RedisCapLedger

        s = self.settings
        caps = {"sms": s.sms_frequency_cap, "email": s.email_frequency_cap}
        by_channel = {channel: cap for channel, cap in caps.items() if cap is not None}
        if not by_channel:
            return None
        return FrequencyCaps(RedisCapLedger(self.redis, self.names), by_channel)

    @cached_property
    def send_context(self) -> SendContext:
        """What senders share."""
        from messaging.sending.common import SendContext
        from queues.flow.ratelimit import RedisRateLimiter
        from queues.metrics import record_outcomes

        return SendContext(
            ledger=self.ledger,
            blasts=self.blasts,
            suppressions=self.suppressions,
            limiter=RedisRateLimiter(self.redis),
            queue=self.lanes,
            control=self.control,
            names=self.names,
            on_outcomes=lambda channel, counts: record_outcomes(
                self.redis, self.names, channel, counts
            ),
            inflight=self.inflight,
            on_provider_auth=self.provider_auth_pause,
        )

    @cached_property
    def inflight(self) -> RedisInFlight:
        """This process's announcement of the ledger rows it holds (senders beat with it;
        the sweep reads every live sender's)."""
        from queues.flow.inflight import RedisInFlight

        inflight = RedisInFlight(self.redis, self.names)
        self._closers.append(inflight.close)
        return inflight

    @cached_property
    def provider_auth_pause(self) -> ProviderAuthPause:
        """Pauses a channel's running blasts when its provider refuses our credentials."""
        from messaging.blasts.lifecycle import BlastLifecycle
        from messaging.safety.provider_auth import ProviderAuthPause

        lifecycle = BlastLifecycle(self.blasts, self.ledger, self.control, self.lanes)
        return ProviderAuthPause(self.blasts, lifecycle, self.audit)

    def breakers(self) -> Breakers:
        """The sweep's circuit breakers (contract §13), with ``RAPID_BREAKERS`` as defaults."""
        from messaging.blasts.lifecycle import BlastLifecycle
        from messaging.safety.breakers import BreakerLimits, Breakers
        from messaging.store.sql.breakers import SqlBreakerWindow

        lifecycle = BlastLifecycle(self.blasts, self.ledger, self.control, self.lanes)
        return Breakers(
            SqlBreakerWindow(self.engine),
            self.stores.replies,
            lifecycle,
            self.audit,
            defaults=BreakerLimits().merged(dict(self.settings.breakers)),
        )

    def in_doubt_settler(self) -> InDoubtSettler:
        """The sweep's settlement of rows whose sender died: SMS by asking Twilio's message
        log when Twilio is configured (else they fail after ``--stuck-after``)."""
        from messaging.safety.in_doubt import InDoubtSettler

        sms_log, sms_config = None, None
        s = self.settings
        if (
            s.twilio_account_sid
            and s.twilio_auth_token
            and s.org_name
            and (s.twilio_from_numbers or s.twilio_messaging_service_sid)
        ):
            from messaging.providers.twilio_sms import TwilioSms
            from messaging.sending.sms import SmsConfig

            transport = TwilioSms(
                s.twilio_account_sid, s.twilio_auth_token, base_url=s.twilio_api_base_url
            )
            self._closers.append(transport.close)
            sms_log = transport
            sms_config = SmsConfig(
                org_name=s.org_name,
                from_numbers=s.twilio_from_numbers,
                messaging_service_sid=s.twilio_messaging_service_sid,
            )
        return InDoubtSettler(
            self.ledger,
            self.lanes,
            self.control.progress,
            sms_log=sms_log,
            sms_config=sms_config,
            links=self.links,
        )

    @cached_property
    def links(self) -> ShortLinks | None:
        """Tracked short links (contract §7) under ``RAPID_SECRET_KEY``; None when there is
        no key (production without one: SMS go with their URLs as written, and say so)."""
        import structlog

        from messaging.content.links import LinkCodes, ShortLinks

        s = self.settings
        try:
            keys = s.unsubscribe_keys()
        except ConfigError:
            structlog.get_logger(__name__).warning(
                "links.untracked", reason="RAPID_SECRET_KEY is not set"
            )
            return None
        base_url = s.short_link_base_url or s.public_base_url
        return ShortLinks(LinkCodes(keys[0], keys[1:]), self.stores.links, base_url)

    def _require(self, **values: Any) -> None:
        for name, value in values.items():
            if not value:
                raise ConfigError(f"{name}: required to send this channel")

    def sms_sender(self) -> SmsSender:
        """The SMS sender on the official Twilio client (fails at start if unconfigured)."""
        from messaging.providers.twilio_sms import TwilioSms
        from messaging.sending.sms import SmsConfig, SmsSender

        s = self.settings
        self._require(
            TWILIO_ACCOUNT_SID=s.twilio_account_sid,
            TWILIO_AUTH_TOKEN=s.twilio_auth_token,
            ORG_NAME=s.org_name,
        )
        if not s.twilio_from_numbers and not s.twilio_messaging_service_sid:
            raise ConfigError(
                "TWILIO_FROM_NUMBERS: set it or TWILIO_MESSAGING_SERVICE_SID to send SMS"
            )
        assert s.twilio_account_sid and s.twilio_auth_token and s.org_name
        account_key = self.names.redis_key("rate", "sms-account")
        transport = TwilioSms(
            s.twilio_account_sid,
            s.twilio_auth_token,
            base_url=s.twilio_api_base_url,
            on_throttle=lambda _wait_s: self.send_context.limiter.throttle(account_key),
        )
        self._closers.append(transport.close)
        config = SmsConfig(
            org_name=s.org_name,
            from_numbers=s.twilio_from_numbers,
            messaging_service_sid=s.twilio_messaging_service_sid,
            status_callback_url=f"{s.public_base_url}/webhooks/twilio/status",
            rate_per_sender_per_s=s.sms_rate_per_sender,
            rate_account_per_s=s.sms_rate_account,
            quiet_hours=s.quiet_hours,
        )
        return SmsSender(
            self.send_context,
            transport,
            config,
            topics=self.stores.topics,
            links=self.links,
        )

    def email_sender(self) -> EmailSender:
        """The email sender on the official SendGrid client (fails at start if unconfigured)."""
        from messaging.content.unsubscribe import UnsubscribeTokens
        from messaging.providers.sendgrid_email import SendGridEmail
        from messaging.sending.email import EmailConfig, EmailSender

        s = self.settings
        self._require(
            SENDGRID_API_KEY=s.sendgrid_api_key,
            EMAIL_FROM=s.email_from,
            ORG_NAME=s.org_name,
            ORG_POSTAL_ADDRESS=s.org_postal_address,
        )
        key = s.unsubscribe_key()
        assert s.sendgrid_api_key and s.email_from and s.org_name and s.org_postal_address and key
        config = EmailConfig(
            email_from=s.email_from,
            org_name=s.org_name,
            org_postal_address=s.org_postal_address,
            public_base_url=s.public_base_url,
            tokens=UnsubscribeTokens(key),
            rate_per_s=s.email_rate,
        )
        email_key = self.names.redis_key("rate", "email")
        transport = SendGridEmail(
            s.sendgrid_api_key,
            base_url=s.sendgrid_api_base_url,
            on_throttle=lambda _wait_s: self.send_context.limiter.throttle(email_key),
        )
        return EmailSender(self.send_context, transport, config, links=self.links)

    def close(self) -> None:
        """Release pooled connections and provider sessions."""
        for close in reversed(self._closers):
            close()
        self._closers.clear()
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()
