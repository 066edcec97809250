"""Email campaigns (C2): a mailing's recipients chosen once, sent in batches that never mail
anyone twice, test sends and schedules. Tracking (unsubscribes, bounces, opens and clicks):
campaigns/services/email_tracking.py. Results are read by
campaigns/selectors.py (email_campaign_results); docs/email.md tells the whole path.

Never twice: a sender claims one message at a time (committed before the mail server hears of
it) and marks it sent once the server accepted it. A sender killed between the two leaves the
message claimed; it is reported as interrupted and never sent again, because it may have
arrived. So a killed and re-run mailing mails every recipient at most once, and all but the
one message in flight exactly once.
"""

from __future__ import annotations

import copy
import logging
import smtplib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import make_msgid, parseaddr
from functools import partial

from anymail.exceptions import (
    AnymailInvalidAddress,
    AnymailRecipientsRefused,
    AnymailRequestsAPIError,
)
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.message import sanitize_address
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Lower
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask

from aggregation.selectors import profile_by_email, profile_get, profiles_matching
from campaigns.bucketing import BUCKETS, HOLDOUT, allocation_update, group_of
from campaigns.mailtemplates import SAMPLE, template_render
from campaigns.mailtracking import (
    DECOY_HTML,
    Addresses,
    MessageRef,
    html_links_track,
    message_token,
    text_links_track,
)
from campaigns.models import (
    EmailCampaign,
    EmailMailing,
    EmailMessage,
    EmailSuppression,
)
from campaigns.services.email_tracking import suppression_add
from segmentation.rules import RuleError
from segmentation.services import rule_condition

logger = logging.getLogger(__name__)

# Messages one run of the send task mails: a few seconds of SMTP, one message in memory at a
# time. A throttled campaign mails at most its rate per run and runs once a minute.
BATCH_SIZE = 200
# Profiles read per query while a mailing's recipients are written.
RECIPIENTS_CHUNK = 2000
SEND_TASK = "campaigns.send_email_campaign"


class EmailError(ValueError):
    pass


class SendDeferred(Exception):
    """The mail server is unreachable or asked to try later: nothing claimed was lost; the
    batch stops and the task retries."""


def _groups(campaign: EmailCampaign) -> list[str]:
    mailed = BUCKETS - campaign.holdout_share
    second = mailed * campaign.subject_b_share // BUCKETS if campaign.subject_b else 0
    return allocation_update(
        None, {HOLDOUT: campaign.holdout_share, "a": mailed - second, "b": second}
    )


def recipients_matching(*, campaign: EmailCampaign):
    """The profiles a campaign mails now: in one of its segments, in none of its exclusions,
    with an address that neither unsubscribed nor bounced."""
    client_id = campaign.client_id
    included = Q(pk__in=[])
    for segment in campaign.segments.all():
        included |= rule_condition(rule=segment.rule, client_id=client_id)
    excluded = Q(pk__in=[])
    for segment in campaign.excluded_segments.all():
        excluded |= rule_condition(rule=segment.rule, client_id=client_id)
    suppressed = EmailSuppression.objects.filter(client_id=client_id).values("email")
    return (
        profiles_matching(client_id=client_id, condition=included & ~excluded)
        .exclude(email="")
        .annotate(address=Lower("email"))
        .exclude(address__in=suppressed)
    )


def _this_minute() -> datetime:
    return timezone.now().replace(second=0, microsecond=0)


def mailing_start(*, campaign: EmailCampaign, occurrence: datetime | None = None) -> EmailMailing:
    """The mailing of a campaign due at `occurrence` (default: this minute), its recipients
    chosen and written now, in this process: asked again for the same occurrence, the same
    mailing. Raises EmailError."""
    mailing, _ = _mailing_open(campaign=campaign, occurrence=occurrence)
    return mailing_prepare(mailing_id=mailing.pk)


@transaction.atomic
def _mailing_open(
    *, campaign: EmailCampaign, occurrence: datetime | None
) -> tuple[EmailMailing, bool]:
    """The mailing row (created "preparing" when new): cheap enough for a request."""
    if campaign.status != EmailCampaign.Status.ACTIVE:
        raise EmailError("only an active campaign sends; this one is " + campaign.status)
    if not campaign.segments.exists():
        raise EmailError("choose at least one segment to mail")
    try:
        recipients_matching(campaign=campaign)  # compiles the rules: no query yet
    except RuleError as error:
        raise EmailError(f"a segment's rule no longer holds: {error}") from None
    return EmailMailing.objects.get_or_create(
        campaign=campaign,
        occurrence=occurrence or _this_minute(),
        defaults={"client_id": campaign.client_id},
    )


@transaction.atomic
def mailing_prepare(*, mailing_id: int) -> EmailMailing:
    """Choose and write a preparing mailing's recipients, once (the worker does it: a large
    audience takes longer than a request may). Raises EmailError."""
    mailing = EmailMailing.objects.select_for_update().select_related("campaign").get(pk=mailing_id)
    if mailing.status != EmailMailing.Status.PREPARING:
        return mailing
    campaign = mailing.campaign
    allocation = _groups(campaign)
    seen: set[str] = set()
    batch: list[EmailMessage] = []
    try:
        profiles = recipients_matching(campaign=campaign).order_by("address", "-last_seen_at")
    except RuleError as error:
        raise EmailError(f"a segment's rule no longer holds: {error}") from None
    for visitor_id, address in profiles.values_list("visitor_id", "address").iterator(
        chunk_size=RECIPIENTS_CHUNK
    ):
        if address in seen:  # two profiles with one address: the one seen last is mailed
            continue
        seen.add(address)
        if not _is_address(address):  # imports check less than a mail library does
            continue
        group = group_of(allocation, campaign.salt, visitor_id)
        batch.append(
            EmailMessage(
                client_id=campaign.client_id,
                mailing=mailing,
                campaign=campaign,
                visitor_id=visitor_id,
                email=address,
                group=group,
                status=EmailMessage.Status.HELD_OUT
                if group == HOLDOUT
                else EmailMessage.Status.PENDING,
            )
        )
        if len(batch) == RECIPIENTS_CHUNK:
            EmailMessage.objects.bulk_create(batch)
            batch = []
    EmailMessage.objects.bulk_create(batch)
    mailing.recipients = mailing.messages.count()
    mailing.status = EmailMailing.Status.SENDING
    mailing.save(update_fields=["recipients", "status"])
    return mailing


def _is_address(address: str) -> bool:
    try:
        validate_email(address)
        sanitize_address(address, "utf-8")
    except (ValidationError, ValueError):
        return False
    return True


def email_campaign_send(
    *, campaign: EmailCampaign, occurrence: datetime | None = None
) -> EmailMailing:
    """Start a mailing of the campaign now (or for a scheduled occurrence) and queue its
    sending once committed; raises EmailError."""
    from campaigns.tasks import send_mailing

    mailing, created = _mailing_open(campaign=campaign, occurrence=occurrence)
    if created:  # asked twice in a minute: one sending, not two at twice the rate
        transaction.on_commit(partial(send_mailing.delay, mailing.pk))
    return mailing


@dataclass
class BatchResult:
    sent: int = 0
    bounced: int = 0
    failed: int = 0
    suppressed: int = 0
    remaining: int = 0
    is_active: bool = True


def mailing_send_batch(*, mailing_id: int, limit: int = BATCH_SIZE) -> BatchResult:
    """Mail up to `limit` waiting messages of a mailing; raises SendDeferred when the mail
    server cannot take them now (the task retries)."""
    mailing = mailing_prepare(mailing_id=mailing_id)
    campaign = mailing.campaign
    result = BatchResult()
    _interrupted_mark(mailing)
    if campaign.status == EmailCampaign.Status.ACTIVE:
        connection = get_connection(fail_silently=False, timeout=settings.EMAIL_TIMEOUT)
        try:
            connection.open()
        except (OSError, smtplib.SMTPException) as error:
            raise SendDeferred(f"the mail server is unreachable: {error}") from error
        try:
            for _ in range(limit):
                # Paused (or the sender refused) mid-batch: stop between two messages.
                if not EmailCampaign.objects.filter(
                    pk=campaign.pk, status=EmailCampaign.Status.ACTIVE
                ).exists():
                    break
                _connection_check(connection)
                message = _claim(mailing)
                if message is None:
                    break
                outcome = _send(connection, message, campaign)
                setattr(result, outcome, getattr(result, outcome) + 1)
        finally:
            connection.close()
    result.is_active = EmailCampaign.objects.filter(
        pk=campaign.pk, status=EmailCampaign.Status.ACTIVE
    ).exists()
    result.remaining = mailing.messages.filter(status=EmailMessage.Status.PENDING).count()
    if (
        not result.remaining
        and not mailing.messages.filter(status=EmailMessage.Status.SENDING).exists()
    ):
        EmailMailing.objects.filter(pk=mailing.pk, status=EmailMailing.Status.SENDING).update(
            status=EmailMailing.Status.DONE, finished_at=timezone.now()
        )
    return result


def mailing_send(*, mailing_id: int, sleep=time.sleep) -> BatchResult:
    """Mail a whole mailing in this process, batch after batch; a throttled campaign sends its
    rate, then waits a minute. Stops when the campaign is no longer active. Raises
    SendDeferred."""
    total = BatchResult()
    while True:
        rate = EmailCampaign.objects.get(mailings=mailing_id).rate_per_minute
        result = mailing_send_batch(mailing_id=mailing_id, limit=rate or BATCH_SIZE)
        for name in ("sent", "bounced", "failed", "suppressed"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        total.remaining, total.is_active = result.remaining, result.is_active
        if not result.remaining or not result.is_active:
            return total
        if rate:
            sleep(60)


def _connection_check(connection) -> None:
    """Open again an SMTP connection the server closed while idle, before a message is claimed:
    otherwise the next message would fail mid-conversation and count as interrupted."""
    smtp = getattr(connection, "connection", None)
    if smtp is None:  # not an SMTP backend (files, a provider's API)
        return
    try:
        smtp.noop()
    except (OSError, smtplib.SMTPException):
        connection.close()
        try:
            connection.open()
        except (OSError, smtplib.SMTPException) as error:
            raise SendDeferred(f"the mail server is unreachable: {error}") from error


def mailings_stalled() -> list[int]:
    """Mailings of active campaigns with waiting messages and no claim for
    EMAIL_CLAIM_SECONDS: their sending stopped and should go on."""
    quiet_since = timezone.now() - timedelta(seconds=settings.EMAIL_CLAIM_SECONDS)
    busy = EmailMessage.objects.filter(mailing=OuterRef("pk"), claimed_at__gte=quiet_since)
    waiting = EmailMessage.objects.filter(
        mailing=OuterRef("pk"), status=EmailMessage.Status.PENDING
    )
    return list(
        EmailMailing.objects.filter(
            campaign__status=EmailCampaign.Status.ACTIVE, started_at__lt=quiet_since
        )
        .filter(
            Q(status=EmailMailing.Status.PREPARING)
            | Q(status=EmailMailing.Status.SENDING) & Exists(waiting)
        )
        .exclude(Exists(busy))
        .values_list("pk", flat=True)
    )


def _interrupted_mark(mailing: EmailMailing) -> int:
    stale = timezone.now() - timedelta(seconds=settings.EMAIL_CLAIM_SECONDS)
    return mailing.messages.filter(status=EmailMessage.Status.SENDING, claimed_at__lt=stale).update(
        status=EmailMessage.Status.INTERRUPTED, error="its sender stopped while sending"
    )


@transaction.atomic
def _claim(mailing: EmailMailing) -> EmailMessage | None:
    # Committed before the message goes out: whatever happens next, it is never claimed again.
    message = (
        mailing.messages.select_for_update(skip_locked=True)
        .filter(status=EmailMessage.Status.PENDING)
        .order_by("id")
        .first()
    )
    if message is None:
        return None
    # Unsubscribed or bounced since the recipients were chosen (a mailing can take hours).
    if EmailSuppression.objects.filter(client_id=message.client_id, email=message.email).exists():
        message.status = EmailMessage.Status.SUPPRESSED
        message.save(update_fields=["status"])
        return message
    message.status = EmailMessage.Status.SENDING
    message.claimed_at = timezone.now()
    message.save(update_fields=["status", "claimed_at"])
    return message


def _send(connection, message: EmailMessage, campaign: EmailCampaign) -> str:
    if message.status == EmailMessage.Status.SUPPRESSED:
        return "suppressed"
    try:
        email = message_build(message=message, campaign=campaign, connection=connection)
    except Exception as error:  # the template met a profile it cannot render
        _finish(message, EmailMessage.Status.FAILED, error=f"template: {error}"[:500])
        return "failed"
    try:
        email.send()
    except smtplib.SMTPRecipientsRefused as error:
        code = next(iter(error.recipients.values()), (550, b""))[0]
        if 400 <= code < 500:  # greylisted, mailbox busy: not delivered, ask again later
            _finish(message, EmailMessage.Status.PENDING, error=str(error.recipients)[:500])
            raise SendDeferred(str(error)) from error
        _finish(message, EmailMessage.Status.BOUNCED, error=str(error.recipients)[:500])
        suppression_add(
            client_id=message.client_id,
            email=message.email,
            reason=EmailSuppression.Reason.BOUNCED,
            message=message,
        )
        return "bounced"
    except smtplib.SMTPSenderRefused as error:
        # The sender itself is refused: every message would fail. Stop the campaign.
        _finish(message, EmailMessage.Status.PENDING, error=str(error)[:500])
        if error.smtp_code >= 500:
            EmailCampaign.objects.filter(pk=campaign.pk).update(status=EmailCampaign.Status.PAUSED)
            logger.error("campaign %s paused: its sender was refused: %s", campaign.pk, error)
        raise SendDeferred(str(error)) from error
    except smtplib.SMTPDataError as error:
        if 400 <= error.smtp_code < 500:  # refused for now, so certainly not delivered
            _finish(message, EmailMessage.Status.PENDING, error=str(error)[:500])
            raise SendDeferred(str(error)) from error
        _finish(message, EmailMessage.Status.FAILED, error=str(error)[:500])
        return "failed"
    except (ValueError, AnymailInvalidAddress, AnymailRecipientsRefused) as error:
        # Refused before anything reached the server: the address itself.
        _finish(message, EmailMessage.Status.FAILED, error=str(error)[:500])
        return "failed"
    except AnymailRequestsAPIError as error:
        # The provider answered with an error: it did not take the message.
        _finish(message, EmailMessage.Status.PENDING, error=str(error)[:500])
        raise SendDeferred(str(error)) from error
    except Exception as error:
        # Cut off mid-conversation (or anything else): the server may have taken it. Never
        # sent again.
        _finish(message, EmailMessage.Status.INTERRUPTED, error=str(error)[:500])
        logger.warning("message %s interrupted: %s", message.pk, error)
        raise SendDeferred(str(error)) from error
    status = getattr(email, "anymail_status", None)
    _finish(
        message,
        EmailMessage.Status.SENT,
        message_id=email.extra_headers["Message-ID"],
        provider_id=(status.message_id or "") if status is not None else "",
        sent_at=timezone.now(),
    )
    return "sent"


def _finish(message: EmailMessage, status: str, **fields) -> None:
    EmailMessage.objects.filter(pk=message.pk).update(status=status, **fields)


def _context(profile) -> dict:
    if profile is None:  # a test send to an address without a profile: show a sample one
        return copy.deepcopy(SAMPLE)
    categories: dict[str, int] = profile.categories or {}
    return {
        "email": profile.email,
        "visits": profile.visits,
        "page_views": profile.page_views,
        "purchases": profile.purchases,
        "total_spent": profile.total_spent,
        "average_order_value": profile.average_order_value,
        "source": profile.source,
        "top_category": max(categories, key=lambda name: categories[name]) if categories else "",
        "first_seen_at": profile.first_seen_at,
        "last_seen_at": profile.last_seen_at,
        "attributes": dict(profile.attributes or {}),
    }


def _subject(source: str, context: dict) -> str:
    # One line, whatever the template's whitespace: a header cannot hold a line break.
    return " ".join(template_render(source, context, is_html=False).split())


def message_build(
    *, message: EmailMessage, campaign: EmailCampaign, connection=None
) -> EmailMultiAlternatives:
    """The message as it is sent: personalized, every link through the signed redirect, the
    open pixel, a decoy link for scanners, and RFC 8058 one-click unsubscribe headers."""
    profile = profile_get(client_id=message.client_id, visitor_id=message.visitor_id)
    token = message_token(MessageRef(message.client_id, message.pk))
    addresses = Addresses(base=settings.EMAIL_BASE_URL.rstrip("/"), token=token)
    context = {**_context(profile), "email": message.email}
    context["unsubscribe_url"] = addresses.unsubscribe
    subject_source = campaign.subject_b if message.group == "b" else campaign.subject
    subject = _subject(subject_source, context)
    own = f"{addresses.base}/e/"

    def track(url: str) -> str:
        return url if url.startswith(own) else addresses.link(url)

    html = html_links_track(template_render(campaign.html_body, context, is_html=True), track)
    text = text_links_track(template_render(campaign.text_body, context, is_html=False), track)
    if addresses.unsubscribe not in text:
        text += f"\n\nUnsubscribe: {addresses.unsubscribe}\n"
    footer = DECOY_HTML.format(href=addresses.link(addresses.base + "/", is_decoy=True))
    if addresses.unsubscribe not in html:
        footer += f'<p style="font-size:12px"><a href="{addresses.unsubscribe}">Unsubscribe</a></p>'
    footer += f'<img src="{addresses.open}" width="1" height="1" alt="" style="display:block">'
    html = html.replace("</body>", footer + "</body>") if "</body>" in html else html + footer
    domain = parseaddr(campaign.from_email)[1].rpartition("@")[2] or "localhost"
    email = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=campaign.from_email,
        to=[message.email],
        reply_to=[campaign.reply_to] if campaign.reply_to else None,
        headers={
            "Message-ID": make_msgid(domain=domain),
            "List-Unsubscribe": f"<{addresses.unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        connection=connection,
    )
    email.attach_alternative(html, "text/html")
    return email


# A test send goes to a few people, never to a list.
TEST_ADDRESSES_MAX = 10


def email_test_send(*, campaign: EmailCampaign, addresses: list[str]) -> int:
    """Send the campaign to these addresses as a test ("[Test]" subject, the profile of the
    address when the client has one, else a sample; links not tracked). Returns how many;
    raises EmailError for more than TEST_ADDRESSES_MAX addresses or a profile the templates
    cannot render (nothing sent), and what the backend raises when it cannot send."""
    if not 0 < len(addresses) <= TEST_ADDRESSES_MAX:
        raise EmailError(f"a test goes to 1 to {TEST_ADDRESSES_MAX} addresses")
    try:
        messages = _test_messages(campaign, addresses)
    except Exception as error:  # a profile the templates cannot render
        raise EmailError(f"not sent: {error}") from error
    return get_connection(fail_silently=False).send_messages(messages) or 0


def _test_messages(campaign: EmailCampaign, addresses: list[str]) -> list[EmailMultiAlternatives]:
    messages = []
    for address in addresses:
        profile = profile_by_email(client_id=campaign.client_id, email=address)
        context = {**_context(profile), "email": address, "unsubscribe_url": "#unsubscribe"}
        subject = _subject(campaign.subject, context)
        email = EmailMultiAlternatives(
            subject=f"[Test] {subject}",
            body=template_render(campaign.text_body, context, is_html=False),
            from_email=campaign.from_email,
            to=[address],
        )
        email.attach_alternative(
            template_render(campaign.html_body, context, is_html=True), "text/html"
        )
        messages.append(email)
    return messages


REPEATS = {
    "daily": {"day_of_week": "*"},
    "weekly": None,  # on the weekday of the first sending
}


@transaction.atomic
def email_campaign_schedule(
    *, campaign: EmailCampaign, at: datetime, repeat: str = ""
) -> PeriodicTask:
    """Put the campaign in the beat schedule: once at `at`, or from then on daily or weekly
    at that time (editable afterwards under Periodic tasks). Raises EmailError."""
    if repeat not in ("", *REPEATS):
        raise EmailError(f"repeat is one of: once, {', '.join(REPEATS)}")
    local = timezone.localtime(at)
    if not repeat and at <= timezone.now():
        raise EmailError("a single sending must be in the future")
    # PeriodicTask.name holds 200 characters.
    name = f"Email campaign {campaign.pk}: {campaign}"[:200]
    task = campaign.schedule or PeriodicTask(name=name)
    task.task = SEND_TASK
    task.args = f"[{campaign.pk}]"
    task.enabled = True
    task.interval = task.solar = None
    if repeat:
        task.clocked = None
        task.one_off = False
        task.crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=str(local.minute),
            hour=str(local.hour),
            day_of_week="*" if repeat == "daily" else str(local.isoweekday() % 7),
            day_of_month="*",
            month_of_year="*",
            timezone=str(timezone.get_current_timezone()),
        )
        task.start_time = at
    else:
        task.crontab = None
        task.one_off = True
        task.clocked, _ = ClockedSchedule.objects.get_or_create(clocked_time=at)
    task.save()
    if campaign.schedule_id != task.pk:
        campaign.schedule = task
        campaign.save(update_fields=["schedule"])
    return task


def email_campaign_unschedule(*, campaign: EmailCampaign) -> None:
    if campaign.schedule is not None:
        campaign.schedule.delete()


@transaction.atomic
def email_campaign_delete(*, campaign: EmailCampaign) -> None:
    """Delete a campaign with its mailings and its entry in the beat schedule."""
    email_campaign_unschedule(campaign=campaign)
    campaign.delete()
