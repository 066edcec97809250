"""Email campaigns (C2): recipients chosen once, sent through a real SMTP server in batches,
never twice, bounces and unsubscribes suppressed, throttled, scheduled."""

import json
import re
from collections import Counter
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.models import EmailMailing, EmailMessage, EmailSuppression
from campaigns.services.email import (
    EmailError,
    SendDeferred,
    email_campaign_delete,
    email_campaign_schedule,
    email_campaign_send,
    email_test_send,
    mailing_send,
    mailing_send_batch,
    mailing_start,
)
from campaigns.services.email_tracking import suppression_add
from campaigns.tasks import resume_mailings, send_email_campaign, send_mailing
from tests.factories import EmailCampaignFactory, ProfileFactory, SegmentFactory

pytestmark = pytest.mark.django_db

BUYERS = {"field": "purchases", "op": "gte", "value": 1}
LOYAL = {"field": "visits", "op": "gte", "value": 5}


def _buyer(client, address, **fields):
    return ProfileFactory(client=client, email=address, purchases=1, **fields)


@pytest.fixture
def campaign(client_a):
    campaign = EmailCampaignFactory(
        client=client_a, segments=[SegmentFactory(client=client_a, rule=BUYERS)]
    )
    return campaign


def test_a_mailing_takes_the_segments_minus_exclusions_and_suppressed_addresses(campaign):
    client = campaign.client
    campaign.excluded_segments.set([SegmentFactory(client=client, rule=LOYAL)])
    _buyer(client, "ann@example.com")
    _buyer(client, "Bob@Example.com", last_seen_at=timezone.now())
    _buyer(client, "bob@example.com")  # the same address: mailed once
    _buyer(client, "loyal@example.com", visits=9)  # excluded segment
    _buyer(client, "")  # no address
    _buyer(client, "gone@example.com")
    _buyer(client, "bounced@example.com")
    ProfileFactory(client=client, email="browser@example.com", purchases=0)  # not in segment
    suppression_add(client_id=client.pk, email="GONE@example.com", reason="unsubscribed")
    suppression_add(client_id=client.pk, email="bounced@example.com", reason="bounced")

    mailing = mailing_start(campaign=campaign)

    assert sorted(mailing.messages.values_list("email", flat=True)) == [
        "ann@example.com",
        "bob@example.com",
    ]
    assert mailing.recipients == 2
    assert set(mailing.messages.values_list("status", flat=True)) == {"pending"}


def test_the_same_occurrence_is_one_mailing(campaign):
    _buyer(campaign.client, "ann@example.com")
    occurrence = timezone.now().replace(second=0, microsecond=0)

    first = mailing_start(campaign=campaign, occurrence=occurrence)
    _buyer(campaign.client, "late@example.com")
    again = mailing_start(campaign=campaign, occurrence=occurrence)

    assert again.pk == first.pk
    assert list(again.messages.values_list("email", flat=True)) == ["ann@example.com"]


def test_a_draft_or_a_campaign_without_segments_does_not_send(client_a):
    draft = EmailCampaignFactory(client=client_a, status="draft")
    with pytest.raises(EmailError, match="only an active campaign sends"):
        mailing_start(campaign=draft)
    bare = EmailCampaignFactory(client=client_a)
    with pytest.raises(EmailError, match="choose at least one segment"):
        mailing_start(campaign=bare)
    assert EmailMailing.objects.count() == 0


def test_messages_reach_the_smtp_server_personalized_and_tracked(campaign, smtp_server, settings):
    settings.EMAIL_BASE_URL = "https://track.example"
    _buyer(campaign.client, "ann@example.com", attributes={"first_name": "Ann"}, total_spent=42)
    mailing = mailing_start(campaign=campaign)

    result = mailing_send(mailing_id=mailing.pk)

    assert (result.sent, result.remaining) == (1, 0)
    assert smtp_server.recipients == ["ann@example.com"]
    message = smtp_server.messages[0]
    assert message["Subject"] == "Hello Ann"
    assert message["From"] == "Golf Shop <news@golfshop.example>"
    assert message["To"] == "ann@example.com"
    sent = EmailMessage.objects.get()
    assert message["Message-ID"] == sent.message_id
    assert sent.message_id.endswith("@golfshop.example>")
    unsubscribe = re.fullmatch(
        r"<(https://track\.example/e/u/[^>]+)>", message["List-Unsubscribe"].strip()
    )
    assert unsubscribe is not None
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "Hi Ann, you spent $42.00." in html
    links = re.findall(r'href="([^"]+)"', html)
    # The sale link, the hidden decoy, and the visible unsubscribe link.
    assert len(links) == 3
    sale, decoy, visible_unsubscribe = (link.replace("&amp;", "&") for link in links)
    assert sale.startswith("https://track.example/e/c/")
    assert parse_qs(urlsplit(sale).query)["u"] == ["https://golfshop.example/sale?a=1&b=2"]
    assert parse_qs(urlsplit(decoy).query)["d"] == ["1"]
    assert visible_unsubscribe == unsubscribe.group(1)
    assert re.search(r'<img src="https://track\.example/e/o/[^"]+\.gif"', html)
    assert "Sale: https://track.example/e/c/" in text
    assert f"Unsubscribe: {unsubscribe.group(1)}" in text
    assert (sent.status, mailing.messages.count()) == ("sent", 1)
    assert EmailMailing.objects.get().status == "done"


def test_the_holdout_and_the_second_subject_split_the_recipients(campaign, smtp_server):
    campaign.holdout_share = 2000
    campaign.subject_b = "Last chance, {{ attributes.first_name or 'friend' }}"
    campaign.save()
    for index in range(200):
        _buyer(campaign.client, f"p{index}@example.com")

    mailing = mailing_start(campaign=campaign)
    mailing_send(mailing_id=mailing.pk)

    groups = Counter(mailing.messages.values_list("group", flat=True))
    assert sum(groups.values()) == 200
    assert 20 <= groups["holdout"] <= 60  # 20% of 200, drawn by hash
    held_out = set(mailing.messages.filter(group="holdout").values_list("email", flat=True))
    assert held_out.isdisjoint(smtp_server.recipients)
    assert len(smtp_server.recipients) == 200 - groups["holdout"]
    subjects = Counter(message["Subject"] for message in smtp_server.messages)
    assert subjects == {"Hello there": groups["a"], "Last chance, friend": groups["b"]}
    # The same visitors fall in the same groups in every mailing.
    again = mailing_start(campaign=campaign, occurrence=timezone.now() + timedelta(days=1))
    assert dict(again.messages.values_list("email", "group")) == dict(
        mailing.messages.values_list("email", "group")
    )


def test_a_refused_address_bounces_and_is_never_mailed_again(campaign, smtp_server):
    _buyer(campaign.client, "ann@example.com")
    _buyer(campaign.client, "nobody@example.com")
    smtp_server.refused.add("nobody@example.com")
    mailing = mailing_start(campaign=campaign)

    result = mailing_send(mailing_id=mailing.pk)

    assert (result.sent, result.bounced) == (1, 1)
    assert smtp_server.recipients == ["ann@example.com"]
    assert EmailMessage.objects.get(email="nobody@example.com").status == "bounced"
    assert EmailSuppression.objects.get().email == "nobody@example.com"
    later = mailing_start(campaign=campaign, occurrence=timezone.now() + timedelta(days=1))
    assert list(later.messages.values_list("email", flat=True)) == ["ann@example.com"]


def test_an_unreachable_server_defers_the_batch_and_claims_nothing(campaign, settings):
    _buyer(campaign.client, "ann@example.com")
    mailing = mailing_start(campaign=campaign)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2

    with pytest.raises(SendDeferred, match="the mail server is unreachable"):
        mailing_send_batch(mailing_id=mailing.pk)

    assert list(mailing.messages.values_list("status", flat=True)) == ["pending"]


def test_the_task_sends_a_throttled_campaign_a_batch_a_minute(campaign, smtp_server, monkeypatch):
    campaign.rate_per_minute = 2
    campaign.save()
    for index in range(5):
        _buyer(campaign.client, f"p{index}@example.com")
    mailing = mailing_start(campaign=campaign)
    queued = []
    monkeypatch.setattr(
        send_mailing, "apply_async", lambda args, countdown: queued.append((args, countdown))
    )

    outcome = send_mailing.apply(args=(mailing.pk,)).get()

    assert outcome == {
        "mailing": mailing.pk, "sent": 2, "bounced": 0, "failed": 0, "suppressed": 0,
        "remaining": 3, "is_active": True,
    }  # fmt: skip
    assert len(smtp_server.recipients) == 2
    assert queued == [((mailing.pk,), 60)]
    # Run again (a retry, a second worker): only what waits is sent.
    send_mailing.apply(args=(mailing.pk,)).get()
    send_mailing.apply(args=(mailing.pk,)).get()
    assert sorted(smtp_server.recipients) == [f"p{index}@example.com" for index in range(5)]
    assert len(queued) == 2  # the last run found nothing left


def test_a_paused_campaign_stops_sending(campaign, smtp_server):
    _buyer(campaign.client, "ann@example.com")
    mailing = mailing_start(campaign=campaign)
    campaign.status = "paused"
    campaign.save()

    result = mailing_send_batch(mailing_id=mailing.pk)

    assert (result.sent, result.remaining) == (0, 1)
    assert smtp_server.messages == []


def test_a_test_send_goes_only_to_the_given_addresses(campaign, smtp_server):
    _buyer(campaign.client, "ann@example.com", attributes={"first_name": "Ann"})

    sent = email_test_send(campaign=campaign, addresses=["ann@example.com", "qa@example.com"])

    assert sent == 2
    assert [message["Subject"] for message in smtp_server.messages] == [
        "[Test] Hello Ann",
        "[Test] Hello Pat",
    ]
    assert EmailMessage.objects.count() == 0


def test_a_schedule_is_a_beat_entry_and_a_double_firing_sends_once(
    campaign, smtp_server, on_commit, settings
):
    at = timezone.now() + timedelta(hours=1)
    task = email_campaign_schedule(campaign=campaign, at=at, repeat="")
    assert (task.task, task.args, task.one_off) == (
        "campaigns.send_email_campaign",
        f"[{campaign.pk}]",
        True,
    )
    assert task.clocked.clocked_time == at
    weekly = email_campaign_schedule(campaign=campaign, at=at, repeat="weekly")
    assert weekly.pk == task.pk and weekly.clocked is None
    local = timezone.localtime(at)
    assert (weekly.crontab.hour, weekly.crontab.minute) == (str(local.hour), str(local.minute))
    assert PeriodicTask.objects.filter(task="campaigns.send_email_campaign").count() == 1
    _buyer(campaign.client, "ann@example.com")

    with on_commit():
        first = send_email_campaign.apply(args=(campaign.pk,)).get()
    with on_commit():
        second = send_email_campaign.apply(args=(campaign.pk,)).get()

    assert first["mailing"] == second["mailing"]
    assert EmailMailing.objects.count() == 1
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    headers = [json.loads(raw)["headers"] for raw in broker.lrange("celery", 0, -1)]
    # Queued once: the second firing found the mailing under way.
    assert [(header["task"], header["argsrepr"]) for header in headers] == [
        ("campaigns.send_mailing", f"({first['mailing']},)")
    ]
    # What the worker then does with them: the second finds nothing left to send.
    send_mailing.apply(args=(first["mailing"],)).get()
    send_mailing.apply(args=(first["mailing"],)).get()
    assert smtp_server.recipients == ["ann@example.com"]


def test_deleting_a_scheduled_campaign_takes_it_out_of_the_beat_schedule(campaign):
    email_campaign_schedule(
        campaign=campaign, at=timezone.now() + timedelta(hours=1), repeat="daily"
    )

    email_campaign_delete(campaign=campaign)

    assert PeriodicTask.objects.filter(task="campaigns.send_email_campaign").count() == 0
    # An entry read just before the deletion finds nothing to send.
    assert send_email_campaign.apply(args=(campaign.pk,)).get() == {
        "campaign": campaign.pk, "skipped": "no such campaign",
    }  # fmt: skip


@pytest.mark.parametrize(
    "sender", ["news@", "Shop <not an address>", "a@b.example\nBcc: x@y.example", "plain text"]
)
def test_a_sender_the_mail_library_refuses_is_refused_at_save(client_a, sender):
    campaign = EmailCampaignFactory.build(client=client_a, from_email=sender)

    with pytest.raises(ValidationError) as refused:
        campaign.full_clean()

    assert refused.value.message_dict["from_email"] == [
        "An address, or a name with the address in angle brackets."
    ]


def test_a_test_send_goes_to_a_few_addresses_only(campaign, smtp_server):
    with pytest.raises(EmailError, match="a test goes to 1 to 10 addresses"):
        email_test_send(campaign=campaign, addresses=[f"a{n}@example.com" for n in range(11)])

    assert smtp_server.messages == []


def test_a_greylisted_recipient_waits_and_is_not_suppressed(campaign, smtp_server):
    _buyer(campaign.client, "slow@example.com")
    smtp_server.deferred.add("slow@example.com")
    mailing = mailing_start(campaign=campaign)

    with pytest.raises(SendDeferred, match="greylisted"):
        mailing_send_batch(mailing_id=mailing.pk)

    message = EmailMessage.objects.get()
    assert message.status == "pending"
    assert EmailSuppression.objects.count() == 0
    smtp_server.deferred.clear()
    assert mailing_send_batch(mailing_id=mailing.pk).sent == 1


def test_a_refused_sender_pauses_the_campaign_and_loses_nothing(campaign, smtp_server):
    for index in range(3):
        _buyer(campaign.client, f"p{index}@example.com")
    smtp_server.is_sender_refused = True
    mailing = mailing_start(campaign=campaign)

    with pytest.raises(SendDeferred, match="sender not allowed"):
        mailing_send_batch(mailing_id=mailing.pk)

    campaign.refresh_from_db()
    assert campaign.status == "paused"
    assert sorted(mailing.messages.values_list("status", flat=True)) == ["pending"] * 3


def test_an_address_no_mail_library_takes_is_never_chosen(campaign):
    _buyer(campaign.client, "x@y@example.com")
    _buyer(campaign.client, "a@example.com, b@example.com")
    _buyer(campaign.client, "ok@example.com")

    mailing = mailing_start(campaign=campaign)

    assert list(mailing.messages.values_list("email", flat=True)) == ["ok@example.com"]
    assert mailing.recipients == 1


def test_an_address_suppressed_during_a_mailing_is_not_mailed(campaign, smtp_server):
    _buyer(campaign.client, "ann@example.com")
    _buyer(campaign.client, "bob@example.com")
    mailing = mailing_start(campaign=campaign)
    suppression_add(client_id=campaign.client_id, email="bob@example.com", reason="unsubscribed")

    result = mailing_send(mailing_id=mailing.pk)

    assert (result.sent, result.suppressed) == (1, 1)
    assert smtp_server.recipients == ["ann@example.com"]
    assert EmailMessage.objects.get(email="bob@example.com").status == "suppressed"


def test_a_paused_campaigns_mailing_waits_for_the_beat_to_resume_it(
    campaign, smtp_server, monkeypatch, settings
):
    _buyer(campaign.client, "ann@example.com")
    mailing = mailing_start(campaign=campaign)
    campaign.status = "paused"
    campaign.save()
    queued = []
    monkeypatch.setattr(send_mailing, "apply_async", lambda *a, **k: queued.append(a))
    monkeypatch.setattr(send_mailing, "delay", lambda *a: queued.append(a))

    send_mailing.apply(args=(mailing.pk,)).get()
    assert queued == []  # no loop while paused

    campaign.status = "active"
    campaign.save()
    settings.EMAIL_CLAIM_SECONDS = 0
    EmailMailing.objects.filter(pk=mailing.pk).update(
        started_at=timezone.now() - timedelta(minutes=1)
    )

    assert resume_mailings.apply().get() == [mailing.pk]
    assert queued == [(mailing.pk,)]


def test_a_mailing_whose_worker_was_lost_while_choosing_is_resumed(
    campaign, smtp_server, monkeypatch, settings, on_commit
):
    _buyer(campaign.client, "ann@example.com")
    with on_commit():
        mailing = email_campaign_send(campaign=campaign)  # its task is queued, then lost
    settings.EMAIL_CLAIM_SECONDS = 0
    EmailMailing.objects.filter(pk=mailing.pk).update(
        started_at=timezone.now() - timedelta(minutes=1)
    )
    queued = []
    monkeypatch.setattr(send_mailing, "delay", lambda *args: queued.append(args))

    assert resume_mailings.apply().get() == [mailing.pk]
    send_mailing.apply(args=queued[0]).get()

    assert smtp_server.recipients == ["ann@example.com"]
    assert EmailMailing.objects.get().status == "done"
