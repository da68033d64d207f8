"""What one recipient's SMS says: their variant's body, rendered, its links shortened.

The sender, the in-doubt settlement (which looks for the very text in Twilio's log) and the
dry run all go through :func:`sms_body`, so they agree to the character.
"""

from __future__ import annotations

from collections.abc import Mapping

from messaging.content.alert import Alert, SmsContent
from messaging.content.links import ShortLinks
from messaging.content.templates import SMS_RENDERED_MAX_CHARS, render
from messaging.content.variants import recipient_variant, sms_content


def sms_part(alert: Alert, supporter_id: int, held: int | None = None) -> SmsContent:
    """The SMS part (body, media) this recipient gets: their variant's, else the alert's
    (``held``: the variant a ``pick_winner`` row held for the winner was given)."""
    part = sms_content(alert, recipient_variant(alert, supporter_id, held))
    assert part is not None, "an SMS row belongs to an alert with an SMS part"
    return part


def sms_body(
    alert: Alert,
    supporter_id: int,
    fields: Mapping[str, object],
    links: ShortLinks | None,
    held: int | None = None,
) -> str:
    """The rendered SMS body (before the first-contact wrapper and GSM normalising);
    :class:`~messaging.content.templates.RenderError` when the template fails for this supporter."""
    part = sms_part(alert, supporter_id, held)
    body = render(part.body, fields, max_chars=SMS_RENDERED_MAX_CHARS)
    if links is not None:
        body = links.for_alert(alert, "sms").rewrite(body, supporter_id)
    return body
