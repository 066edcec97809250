"""Email tracking (C2, B3): suppressions, one-click unsubscribe, providers' delivery reports,
the opens and clicks loaded from the spool, and the landing pages that join a browser to its
recipient (docs/email.md)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from campaigns.mailtracking import MessageRef, TrackingError, landing_token, message_token_read
from campaigns.models import EmailActivity, EmailMessage, EmailSuppression

logger = logging.getLogger(__name__)


def suppression_add(
    *, client_id: int, email: str, reason: str, message: EmailMessage | None = None
) -> EmailSuppression:
    """Never mail this address of this client again (the first reason is kept)."""
    suppression, _ = EmailSuppression.objects.get_or_create(
        client_id=client_id,
        email=email.lower(),
        defaults={"reason": reason, "message": message},
    )
    return suppression


@transaction.atomic
def email_unsubscribe(*, token: str) -> EmailMessage:
    """One-click unsubscribe (RFC 8058) of a message's recipient; raises TrackingError for a
    token not made here. Asked twice, nothing changes the second time."""
    ref = message_token_read(token)
    message = EmailMessage.objects.filter(pk=ref.message_id, client_id=ref.client_id).first()
    if message is None:
        raise TrackingError("this message is no longer known")
    if message.unsubscribed_at is None:
        message.unsubscribed_at = timezone.now()
        message.save(update_fields=["unsubscribed_at"])
    suppression_add(
        client_id=message.client_id,
        email=message.email,
        reason=EmailSuppression.Reason.UNSUBSCRIBED,
        message=message,
    )
    return message


def email_delivery_report(*, provider_id: str, event_type: str) -> int:
    """A sending provider's report (django-anymail tracking): a bounce or a complaint marks
    the message and suppresses its address. Returns the messages changed."""
    reasons = {
        "bounced": EmailSuppression.Reason.BOUNCED,
        "rejected": EmailSuppression.Reason.BOUNCED,
        "complained": EmailSuppression.Reason.COMPLAINED,
    }
    if not provider_id or event_type not in reasons:
        return 0
    changed = 0
    for message in EmailMessage.objects.filter(provider_id=provider_id):
        if event_type != "complained":
            EmailMessage.objects.filter(pk=message.pk).update(
                status=EmailMessage.Status.BOUNCED, error=f"reported {event_type}"
            )
        suppression_add(
            client_id=message.client_id,
            email=message.email,
            reason=reasons[event_type],
            message=message,
        )
        changed += 1
    return changed


def email_activities_load(*, records: list[dict]) -> int:
    """Opens and clicks from spool records (consolidation calls this in the transaction of
    their slice); a record of another client's message, or of a deleted one, is skipped.
    Returns how many were new."""
    if not records:
        return 0
    messages = dict(
        EmailMessage.objects.filter(
            pk__in={record["properties"].get("message") for record in records}
        ).values_list("pk", "client_id")
    )
    activities = []
    for record in records:
        properties = record["properties"]
        message_id = properties.get("message")
        if messages.get(message_id) != record["client"]:
            logger.warning("email activity of an unknown message %s skipped", message_id)
            continue
        activities.append(
            EmailActivity(
                event_id=record["event_id"],
                client_id=record["client"],
                message_id=message_id,
                kind="open" if record["type"] == "email_open" else "click",
                at=record["occurred_at"],
                url=record["url"],
                is_decoy=bool(properties.get("decoy")),
                user_agent=str(properties.get("user_agent", ""))[:300],
                ip=str(properties.get("ip", ""))[:45],
            )
        )
    before = EmailActivity.objects.filter(event_id__in=[a.event_id for a in activities]).count()
    EmailActivity.objects.bulk_create(activities, batch_size=500, ignore_conflicts=True)
    return len(activities) - before


def recipients_of_landings(
    *, landings: dict[int, dict[str, tuple[str, datetime]]]
) -> dict[int, dict[str, str]]:
    """For the page views that landed from an email link (client -> {visitor: (landing url,
    when)}), the recipient's address per visitor, so that the visitor joins the recipient (B5).
    Only a landing within the campaign's attribution window after the message was sent joins:
    a forwarded message or a shared address found much later joins nobody."""
    refs: dict[int, dict[str, tuple[MessageRef, datetime]]] = {}
    for client_id, views in landings.items():
        for visitor_id, (url, at) in views.items():
            try:
                ref = message_token_read(landing_token(url))
            except TrackingError:
                continue
            if ref.client_id == client_id:  # one client's link never joins another's visitor
                refs.setdefault(client_id, {})[visitor_id] = (ref, at)
    messages: dict[int, tuple[str, datetime, timedelta]] = {}
    for pk, email, sent_at, days in EmailMessage.objects.filter(
        pk__in=[ref.message_id for by in refs.values() for ref, _ in by.values()]
    ).values_list("pk", "email", "sent_at", "campaign__attribution_days"):
        if sent_at is not None:  # held out, or not sent yet: no link of it was ever clicked
            messages[pk] = (email, sent_at, timedelta(days=days))
    joins: dict[int, dict[str, str]] = {}
    for client_id, by in refs.items():
        for visitor_id, (ref, at) in by.items():
            if ref.message_id not in messages:
                continue
            email, sent_at, window = messages[ref.message_id]
            if sent_at <= at <= sent_at + window:
                joins.setdefault(client_id, {})[visitor_id] = email
    return joins
