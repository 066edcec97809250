"""The console's email campaign pages: add with template errors, send now, a test send, the
schedule, results; all scoped to the member's client."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.models import EmailCampaign, EmailMailing
from campaigns.services.email import mailing_send, mailing_send_batch, mailing_start
from tests.factories import EmailCampaignFactory, ProfileFactory, SegmentFactory

pytestmark = pytest.mark.django_db

BUYERS = {"field": "purchases", "op": "gte", "value": 1}


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def newsletter(client_a):
    campaign = EmailCampaignFactory(
        client=client_a, name="November", segments=[SegmentFactory(client=client_a, rule=BUYERS)]
    )
    for index in range(3):
        ProfileFactory(client=client_a, email=f"p{index}@example.com", purchases=1)
    return campaign


def _form(segment_ids, **fields) -> dict:
    return {
        "name": "Winter", "status": "draft", "segments": [str(pk) for pk in segment_ids],
        "from_email": "news@shop.example", "subject": "Hi", "html_body": "<p>Hi</p>",
        "text_body": "Hi", "subject_b_share": "5000", "holdout_share": "0",
        "attribution_days": "7", **fields,
    }  # fmt: skip


def test_a_bad_template_is_a_form_error_with_its_line(client, client_a, marketer):
    segment = SegmentFactory(client=client_a)

    response = client.post(
        reverse("admin:campaigns_emailcampaign_add"),
        _form([segment.pk], html_body="<p>\n{{ password }}</p>"),
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["html_body"] == [
        "line 2: unknown field 'password' (the fields are: email, visits, page_views, purchases, "
        "total_spent, average_order_value, source, top_category, first_seen_at, last_seen_at, "
        "attributes, unsubscribe_url)"
    ]
    assert EmailCampaign.objects.count() == 0


def test_another_clients_segment_cannot_be_mailed(client, client_a, client_b, marketer):
    theirs = SegmentFactory(client=client_b)

    response = client.post(reverse("admin:campaigns_emailcampaign_add"), _form([theirs.pk]))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["segments"] == [
        f"Select a valid choice. {theirs.pk} is not one of the available choices."
    ]
    assert EmailCampaign.objects.count() == 0


def test_send_now_asks_then_starts_a_mailing(client, marketer, newsletter, on_commit):
    url = reverse("admin:campaigns-emailcampaign-send", args=[newsletter.pk])

    asked = client.get(url)
    assert asked.status_code == 200
    assert b"to 3 visitors of its segments who can be mailed" in asked.content
    assert EmailMailing.objects.count() == 0

    with on_commit():
        response = client.post(url)

    assert response.status_code == 302
    assert _messages(response) == ["Sending has started: the worker is choosing the recipients."]
    mailing = EmailMailing.objects.get()
    assert (mailing.status, mailing.messages.count()) == ("preparing", 0)
    # The worker's first batch chooses them (a large audience takes longer than a request).
    mailing_send_batch(mailing_id=mailing.pk, limit=0)
    assert EmailMailing.objects.get().messages.count() == 3


def test_a_viewer_cannot_send(client, viewer, newsletter):
    url = reverse("admin:campaigns-emailcampaign-send", args=[newsletter.pk])

    assert client.post(url).status_code == 403
    assert EmailMailing.objects.count() == 0


def test_another_clients_member_cannot_see_the_results(client, client_b, newsletter):
    from coremetrics.models import Membership
    from tests.factories import MembershipFactory

    client.force_login(MembershipFactory(client=client_b, role=Membership.Role.ADMIN).user)

    response = client.get(reverse("admin:campaigns-emailcampaign-results", args=[newsletter.pk]))

    assert response.status_code == 403


def test_a_test_send_from_the_console(client, marketer, newsletter, smtp_server):
    url = reverse("admin:campaigns-emailcampaign-test", args=[newsletter.pk])

    response = client.post(url, {"addresses": "qa@example.com, boss@example.com"})

    assert response.status_code == 302
    assert smtp_server.recipients == ["qa@example.com", "boss@example.com"]
    assert client.post(url, {"addresses": "not an address"}).status_code == 200
    assert len(smtp_server.recipients) == 2


def test_scheduling_from_the_console(client, marketer, newsletter):
    url = reverse("admin:campaigns-emailcampaign-schedule", args=[newsletter.pk])
    at = timezone.localtime(timezone.now() + timedelta(days=1)).replace(second=0, microsecond=0)

    response = client.post(url, {"at": at.strftime("%Y-%m-%dT%H:%M"), "repeat": "weekly"})

    assert response.status_code == 302
    task = PeriodicTask.objects.get(task="campaigns.send_email_campaign")
    assert (task.crontab.hour, task.crontab.minute) == (str(at.hour), str(at.minute))
    client.post(url, {"unschedule": "1"})
    assert PeriodicTask.objects.filter(task="campaigns.send_email_campaign").count() == 0


def test_the_results_page_shows_raw_and_human_figures(client, marketer, newsletter, smtp_server):
    mailing_send(mailing_id=mailing_start(campaign=newsletter).pk)

    response = client.get(reverse("admin:campaigns-emailcampaign-results", args=[newsletter.pk]))

    assert response.status_code == 200
    totals = response.context["results"]["totals"]
    assert (totals["sent"], totals["delivered"], totals["opened_raw"]) == (3, 3, 0)
    assert b'<td id="delivered">3</td>' in response.content
    assert b"No machine opens or clicks recorded." in response.content
