"""What one SMS provider result means for its ledger row: an outcome, or why it waits."""

from __future__ import annotations

import structlog

from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.errors import (
    InDoubtSendError,
    PermanentSendError,
    ProviderAuthError,
    SendError,
    TransientSendError,
)
from messaging.ports import Outcome
from messaging.providers.base import SmsMessage, SmsReceipt
from messaging.sending.common import BatchReport, SendContext, Waiting

log = structlog.get_logger(__name__)


def sms_outcome(
    ctx: SendContext,
    sid: int,
    message: SmsMessage,
    segments: int,
    result: SmsReceipt | SendError | None,
    report: BatchReport,
    status_now: str,
    stopped: set[str],
) -> Outcome | Waiting:
    """The ledger outcome of one provider result, or why it has none yet."""
    sender = message.from_number or message.messaging_service_sid
    if result is None and message.to in stopped:  # a STOP landed while it waited for its slot
        report.add(RowState.SUPPRESSED)
        return Outcome(sid, RowState.SUPPRESSED, error="suppressed while queued to send")
    if result is None:  # the gate closed before the call: canceled/expired end here, paused waits
        if status_now in (BlastStatus.CANCELED, BlastStatus.EXPIRED):
            state = RowState.CANCELED if status_now == BlastStatus.CANCELED else RowState.EXPIRED
            report.add(state)
            return Outcome(sid, state, error=f"blast {status_now}")
        report.wait(Waiting.HELD)
        return Waiting.HELD
    if isinstance(result, SmsReceipt):
        report.add(RowState.SENT)
        return Outcome(
            sid,
            RowState.SENT,
            provider_message_id=result.sid,
            sender=sender,
            segments=result.segments or segments,
        )
    if isinstance(result, ProviderAuthError):
        # Not the recipient's fault: it waits (pending) while the channel pauses fleet-wide.
        report.wait(Waiting.AUTH)
        ctx.provider_refused("sms", result)
        return Waiting.AUTH
    if isinstance(result, InDoubtSendError):
        # Twilio may have it: the row stays `sending` and the sweep asks Twilio's log.
        report.wait(Waiting.IN_DOUBT)
        log.error("sms.in_doubt", error=str(result))
        return Waiting.IN_DOUBT
    if isinstance(result, TransientSendError):
        report.wait(Waiting.TRANSIENT)
        log.warning("sms.transient", error=str(result), code=result.code)
        return Waiting.TRANSIENT
    if isinstance(result, PermanentSendError) and result.suppress:
        ctx.suppressions.add("sms", message.to, reason=f"twilio-{result.code}", source="provider")
    report.add(RowState.FAILED)
    return Outcome(sid, RowState.FAILED, sender=sender, error_code=result.code, error=str(result))
