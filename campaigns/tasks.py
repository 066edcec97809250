from celery import shared_task

from campaigns.models import EmailCampaign
from campaigns.services.email import (
    BATCH_SIZE,
    EmailError,
    SendDeferred,
    email_campaign_send,
    mailing_send_batch,
    mailings_stalled,
)


@shared_task(name="campaigns.send_email_campaign")
def send_email_campaign(campaign_id: int) -> dict:
    """The beat schedule's entry for a campaign: start its mailing for this minute (a second
    firing in the same minute finds the same mailing) and queue its sending."""
    campaign = EmailCampaign.objects.filter(pk=campaign_id).first()
    if campaign is None:  # deleted since its entry was read
        return {"campaign": campaign_id, "skipped": "no such campaign"}
    try:
        mailing = email_campaign_send(campaign=campaign)
    except EmailError as error:
        return {"campaign": campaign_id, "skipped": str(error)}
    return {"campaign": campaign_id, "mailing": mailing.pk, "recipients": mailing.recipients}


@shared_task(name="campaigns.send_mailing", bind=True, max_retries=8)
def send_mailing(self, mailing_id: int) -> dict:
    """Mail one batch of a mailing, then queue the next: at once, or a minute later for a
    throttled campaign (its rate a minute). Re-run, it mails only what is waiting."""
    rate = (
        EmailCampaign.objects.filter(mailings=mailing_id)
        .values_list("rate_per_minute", flat=True)
        .first()
    )
    try:
        result = mailing_send_batch(mailing_id=mailing_id, limit=rate or BATCH_SIZE)
    except SendDeferred as error:
        # Bounded backoff: 1, 2, 4 ... 128 minutes; past it, resume_mailings picks it up.
        raise self.retry(exc=error, countdown=60 * 2**self.request.retries) from error
    if result.remaining and result.is_active:  # a paused campaign is resumed by the beat
        send_mailing.apply_async((mailing_id,), countdown=60 if rate else 0)
    return {"mailing": mailing_id, **vars(result)}


@shared_task(name="campaigns.resume_mailings")
def resume_mailings() -> list[int]:
    """The beat's safety net: queue again the mailings of active campaigns that have waiting
    messages and no sender at work (a campaign set active again, retries given up, a worker
    lost)."""
    mailing_ids = mailings_stalled()
    for mailing_id in mailing_ids:
        send_mailing.delay(mailing_id)
    return mailing_ids
