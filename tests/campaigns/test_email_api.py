"""Email campaigns through the REST API: set up with segments and templates, sent now, test
sends through a real SMTP server, schedules, results; mailings, messages and suppressions; roles
and another client's rows (tests/coremetrics/test_api.py has the isolation test of every
endpoint)."""

import socket
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from campaigns.models import EmailCampaign, EmailMailing, EmailSuppression
from campaigns.services.email import mailing_prepare, mailing_send, mailing_start
from campaigns.services.email_tracking import suppression_add
from coremetrics.models import Membership
from coremetrics.tokens import api_token_create
from tests.factories import (
    EmailCampaignFactory,
    MembershipFactory,
    ProfileFactory,
    SegmentFactory,
)

pytestmark = pytest.mark.django_db

API = "/api/v1"
BUYERS = {"field": "purchases", "op": "gte", "value": 1}
LOYAL = {"field": "visits", "op": "gte", "value": 5}
TEMPLATE_FIELDS = (
    "email, visits, page_views, purchases, total_spent, average_order_value, source, "
    "top_category, first_seen_at, last_seen_at, attributes, unsubscribe_url"
)


def _api(client, scope="write"):
    _, key = api_token_create(client=client, name=f"{scope} token", scope=scope)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api


def _member(client, role):
    api = APIClient()
    api.force_authenticate(MembershipFactory(client=client, role=role).user)
    return api


@pytest.fixture
def api_a(client_a):
    return _api(client_a)


@pytest.fixture
def newsletter(client_a):
    campaign = EmailCampaignFactory(
        client=client_a, name="November", segments=[SegmentFactory(client=client_a, rule=BUYERS)]
    )
    for index in range(3):
        ProfileFactory(client=client_a, email=f"p{index}@example.com", purchases=1)
    return campaign


def _body(segment_ids, **fields) -> dict:
    return {
        "name": "Winter", "status": "active", "segments": segment_ids,
        "from_email": "Golf Shop <news@golfshop.example>", "subject": "Hi {{ email }}",
        "html_body": "<p>Hi</p>", "text_body": "Hi", **fields,
    }  # fmt: skip


def test_a_campaign_is_created_with_its_segments_and_changed(api_a, client_a):
    buyers = SegmentFactory(client=client_a, rule=BUYERS)
    loyal = SegmentFactory(client=client_a, rule=LOYAL)

    created = api_a.post(
        f"{API}/email-campaigns",
        _body([buyers.pk], excluded_segments=[loyal.pk], holdout_share=1000),
        format="json",
    )
    url = f"{API}/email-campaigns/{created.json()['id']}"
    changed = api_a.patch(url, {"segments": [buyers.pk, loyal.pk], "status": "paused"})

    assert created.status_code == 201
    assert {
        name: created.json()[name] for name in ("segments", "excluded_segments", "schedule")
    } == {
        "segments": [buyers.pk],
        "excluded_segments": [loyal.pk],
        "schedule": None,
    }
    assert changed.status_code == 200
    campaign = EmailCampaign.objects.get()
    assert (campaign.client, campaign.status, campaign.holdout_share) == (client_a, "paused", 1000)
    assert sorted(campaign.segments.values_list("pk", flat=True)) == [buyers.pk, loyal.pk]
    assert list(campaign.excluded_segments.values_list("pk", flat=True)) == [loyal.pk]


def test_template_errors_are_field_errors_with_their_line_and_nothing_is_saved(api_a, client_a):
    segment = SegmentFactory(client=client_a)

    answer = api_a.post(
        f"{API}/email-campaigns",
        _body(
            [segment.pk],
            html_body="<p>\n{{ password }}</p>",
            subject="Hi {{ email",
            from_email="news@golfshop.example\nBcc: all@example.com",
        ),
        format="json",
    )

    assert answer.status_code == 400
    assert answer.json() == {
        "html_body": [f"line 2: unknown field 'password' (the fields are: {TEMPLATE_FIELDS})"],
        "subject": ["line 1: unexpected end of template, expected 'end of print statement'."],
        "from_email": ["An address, or a name with the address in angle brackets."],
    }
    assert EmailCampaign.objects.count() == 0


def test_another_clients_segment_does_not_exist(api_a, client_a, client_b):
    mine = SegmentFactory(client=client_a)
    theirs = SegmentFactory(client=client_b)
    campaign = EmailCampaignFactory(client=client_a, segments=[mine])

    created = api_a.post(
        f"{API}/email-campaigns",
        _body([mine.pk, theirs.pk], excluded_segments=[theirs.pk]),
        format="json",
    )
    changed = api_a.patch(
        f"{API}/email-campaigns/{campaign.pk}", {"excluded_segments": [theirs.pk]}, format="json"
    )

    refusal = [f'Invalid pk "{theirs.pk}" - object does not exist.']
    assert (created.status_code, changed.status_code) == (400, 400)
    assert created.json() == {"segments": refusal, "excluded_segments": refusal}
    assert changed.json() == {"excluded_segments": refusal}
    assert EmailCampaign.objects.count() == 1
    assert list(campaign.excluded_segments.all()) == []


def test_send_starts_a_mailing_and_queues_its_sending(
    api_a, newsletter, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        answer = api_a.post(f"{API}/email-campaigns/{newsletter.pk}/send")

    mailing = EmailMailing.objects.get()
    assert answer.status_code == 201
    assert answer.json() == {
        "id": mailing.pk,
        "campaign": newsletter.pk,
        "occurrence": mailing.occurrence.isoformat().replace("+00:00", "Z"),
        "status": "preparing",
        "recipients": 0,
        "started_at": mailing.started_at.isoformat().replace("+00:00", "Z"),
        "finished_at": None,
    }
    assert len(queued) == 1
    # The worker chooses the recipients: a large audience takes longer than a request may.
    mailing_prepare(mailing_id=mailing.pk)
    assert sorted(mailing.messages.values_list("email", flat=True)) == [
        "p0@example.com",
        "p1@example.com",
        "p2@example.com",
    ]


def test_send_of_a_draft_is_refused_with_the_reason(api_a, newsletter):
    newsletter.status = EmailCampaign.Status.DRAFT
    newsletter.save()

    answer = api_a.post(f"{API}/email-campaigns/{newsletter.pk}/send")

    assert answer.status_code == 400
    assert answer.json() == {"detail": "only an active campaign sends; this one is draft"}
    assert EmailMailing.objects.count() == 0


def test_a_test_send_arrives_at_the_smtp_server(api_a, newsletter, smtp_server):
    answer = api_a.post(
        f"{API}/email-campaigns/{newsletter.pk}/test-send",
        {"addresses": ["qa@example.com", "p1@example.com"]},
        format="json",
    )

    assert (answer.status_code, answer.json()) == (200, {"sent": 2})
    assert smtp_server.recipients == ["qa@example.com", "p1@example.com"]
    assert [message["Subject"] for message in smtp_server.messages] == [
        "[Test] Hello Pat",
        "[Test] Hello there",
    ]
    assert EmailMailing.objects.count() == 0


@pytest.mark.parametrize(
    ("addresses", "error"),
    [
        (["not an address"], {"0": ["Enter a valid email address."]}),
        ([], ["Ensure this field has at least 1 elements."]),
        (
            [f"qa{n}@example.com" for n in range(11)],
            ["Ensure this field has no more than 10 elements."],
        ),
    ],
)
def test_a_test_send_to_bad_addresses_sends_nothing(
    api_a, newsletter, smtp_server, addresses, error
):
    answer = api_a.post(
        f"{API}/email-campaigns/{newsletter.pk}/test-send", {"addresses": addresses}, format="json"
    )

    assert (answer.status_code, answer.json()) == (400, {"addresses": error})
    assert smtp_server.messages == []


def test_a_test_send_the_templates_cannot_render_for_a_profile_sends_nothing(
    api_a, client_a, smtp_server
):
    # It renders for the sample recipient (so it was saved), not for this profile's attribute.
    campaign = EmailCampaignFactory(client=client_a, text_body="{{ (attributes.age or 0) + 1 }}")
    ProfileFactory(client=client_a, email="old@example.com", attributes={"age": "old"})

    answer = api_a.post(
        f"{API}/email-campaigns/{campaign.pk}/test-send",
        {"addresses": ["qa@example.com", "old@example.com"]},
        format="json",
    )

    assert (answer.status_code, answer.json()) == (
        400,
        {"detail": 'not sent: can only concatenate str (not "int") to str'},
    )
    assert smtp_server.messages == []


def test_a_test_send_without_a_mail_server_is_503(api_a, newsletter, settings):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2

    answer = api_a.post(
        f"{API}/email-campaigns/{newsletter.pk}/test-send",
        {"addresses": ["qa@example.com"]},
        format="json",
    )

    assert answer.status_code == 503
    assert answer.json() == {
        "detail": "the mail server did not take the messages ([Errno 111] Connection refused); "
        "retry later"
    }


def test_a_campaign_is_scheduled_and_unscheduled(api_a, newsletter):
    url = f"{API}/email-campaigns/{newsletter.pk}/schedule"
    at = (timezone.now() + timedelta(days=1)).replace(hour=9, minute=30, second=0, microsecond=0)

    weekly = api_a.post(url, {"at": at.isoformat(), "repeat": "weekly"}, format="json")
    task = PeriodicTask.objects.get(task="campaigns.send_email_campaign")
    once = api_a.post(url, {"at": at.isoformat()}, format="json")
    removed = api_a.delete(url)

    assert (weekly.status_code, weekly.json()["schedule"]) == (
        200,
        {
            "enabled": True,
            "once_at": None,
            "crontab": str(task.crontab),
            "last_run_at": None,
        },
    )
    assert (task.crontab.hour, task.crontab.minute, task.args) == ("9", "30", f"[{newsletter.pk}]")
    assert (once.status_code, once.json()["schedule"]["once_at"]) == (
        200,
        at.isoformat().replace("+00:00", "Z"),
    )
    assert removed.status_code == 204
    assert PeriodicTask.objects.filter(task="campaigns.send_email_campaign").count() == 0
    assert api_a.get(f"{API}/email-campaigns/{newsletter.pk}").json()["schedule"] is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"at": "2001-01-01T09:00:00Z"}, {"detail": "a single sending must be in the future"}),
        ({"at": "2999-01-01T09:00:00Z"}, {"at": ["must be within 2000-2099"]}),
        (
            {"at": "2099-01-01T09:00:00Z", "repeat": "hourly"},
            {"repeat": ['"hourly" is not a valid choice.']},
        ),
    ],
)
def test_a_bad_schedule_is_refused(api_a, newsletter, body, error):
    answer = api_a.post(f"{API}/email-campaigns/{newsletter.pk}/schedule", body, format="json")

    assert (answer.status_code, answer.json()) == (400, error)
    assert PeriodicTask.objects.filter(task="campaigns.send_email_campaign").count() == 0


def test_the_results_are_plain_numbers_with_the_holdout_compared(api_a, client_a, smtp_server):
    # With this salt, visitors 1 and 3 are mailed and 0 and 2 held out.
    campaign = EmailCampaignFactory(
        client=client_a,
        salt="holdout",
        holdout_share=5000,
        segments=[SegmentFactory(client=client_a, rule=BUYERS)],
    )
    for index in range(4):
        ProfileFactory(
            client=client_a, visitor_id=f"visitor-{index}", email=f"p{index}@example.com",
            purchases=1,
        )  # fmt: skip
    mailing = mailing_start(campaign=campaign)
    mailing_send(mailing_id=mailing.pk)
    later = mailing_start(campaign=campaign, occurrence=timezone.now() + timedelta(days=1))
    other = EmailCampaignFactory(client=client_a, segments=campaign.segments.all())
    other_mailing = mailing_start(campaign=other)
    url = f"{API}/email-campaigns/{campaign.pk}/results"

    first = api_a.get(url, {"mailing": mailing.pk})
    both = api_a.get(url)
    foreign = api_a.get(url, {"mailing": other_mailing.pk})

    totals = {
        "recipients": 4, "held_out": 2, "waiting": 0, "sent": 2, "delivered": 2, "bounced": 0,
        "failed": 0, "interrupted": 0, "opened_raw": 0, "opened_human": 0, "clicked_raw": 0,
        "clicked_human": 0, "unsubscribed": 0, "purchases": 0, "revenue": 0.0,
    }  # fmt: skip
    sample = {"visitors": 2, "conversions": 0, "conversion_rate": 0.0, "revenue_per_visitor": 0.0}
    no_difference = {
        "difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0, "lift": None,
        "lift_low": None, "lift_high": None, "is_significant": False,
    }  # fmt: skip
    assert smtp_server.recipients == ["p1@example.com", "p3@example.com"]
    assert later.recipients == 4
    assert (first.status_code, first.json()) == (
        200,
        {
            "attribution_days": 7,
            "totals": totals,
            "groups": [
                {**totals, "recipients": 2, "held_out": 0, "key": "a", "subject": campaign.subject}
            ],
            "machine_reasons": [],
            "holdout": {
                "mailed": sample,
                "held_out": sample,
                "conversion": no_difference,
                "revenue": None,
            },
        },
    )
    assert both.status_code == 200
    assert both.json()["totals"] == {**totals, "recipients": 8, "held_out": 4, "waiting": 2}
    # One sample per person over the mailings: the same two people held out twice.
    assert both.json()["holdout"]["held_out"] == sample
    assert (foreign.status_code, foreign.json()) == (
        400,
        {"mailing": ["no mailing of this campaign"]},
    )


def test_mailings_and_messages_are_listed_filtered_and_searched(api_a, newsletter):
    mailing = mailing_start(campaign=newsletter)
    EmailCampaignFactory(client=newsletter.client)

    mailings = api_a.get(f"{API}/email-mailings", {"campaign": newsletter.pk}).json()
    pending = api_a.get(f"{API}/email-messages", {"mailing": mailing.pk, "status": "pending"})
    found = api_a.get(f"{API}/email-messages", {"search": "P1@EXAMPLE", "group": "a"})
    sent = api_a.get(f"{API}/email-messages", {"status": "sent"})

    assert [row["id"] for row in mailings["results"]] == [mailing.pk]
    assert [row["email"] for row in pending.json()["results"]] == [
        "p0@example.com",
        "p1@example.com",
        "p2@example.com",
    ]
    [message] = found.json()["results"]
    assert (message["email"], message["mailing"], message["group"]) == (
        "p1@example.com",
        mailing.pk,
        "a",
    )
    assert sent.json()["count"] == 0


def test_a_suppression_is_added_lower_cased_and_removed(api_a, client_a):
    created = api_a.post(f"{API}/email-suppressions", {"email": "Ann@Example.COM"}, format="json")
    again = api_a.post(
        f"{API}/email-suppressions",
        {"email": "ann@example.com", "reason": "complained"},
        format="json",
    )
    url = f"{API}/email-suppressions/{created.json()['id']}"
    changed = api_a.patch(url, {"reason": "bounced"}, format="json")

    assert created.status_code == 201
    assert (created.json()["email"], created.json()["reason"]) == ("ann@example.com", "manual")
    assert (again.status_code, again.json()) == (400, {"email": ["already used (email)"]})
    assert changed.status_code == 405
    suppression = EmailSuppression.objects.get()
    assert (suppression.client, suppression.email, suppression.reason) == (
        client_a,
        "ann@example.com",
        "manual",
    )
    assert api_a.delete(url).status_code == 204
    assert EmailSuppression.objects.count() == 0


PRINCIPALS = {
    "read token": lambda client: _api(client, scope="read"),
    "viewer": lambda client: _member(client, Membership.Role.VIEWER),
    "marketer": lambda client: _member(client, Membership.Role.MARKETER),
    "admin": lambda client: _member(client, Membership.Role.ADMIN),
    "write token": lambda client: _api(client, scope="write"),
}


@pytest.mark.parametrize(
    ("who", "writes", "written"),
    [
        ("read token", [403, 403, 403, 403], 0),
        ("viewer", [403, 403, 403, 403], 0),
        ("marketer", [201, 201, 200, 200], 1),
        ("admin", [201, 201, 200, 200], 1),
        ("write token", [201, 201, 200, 200], 1),
    ],
)
def test_viewers_and_read_tokens_read_and_editors_write(
    client_a, newsletter, who, writes, written, smtp_server, django_capture_on_commit_callbacks
):
    api = PRINCIPALS[who](client_a)
    url = f"{API}/email-campaigns/{newsletter.pk}"
    at = (timezone.now() + timedelta(days=1)).isoformat()

    with django_capture_on_commit_callbacks(execute=False):
        answers = [
            api.post(f"{url}/send").status_code,
            api.post(f"{API}/email-suppressions", {"email": "x@example.com"}).status_code,
            api.post(f"{url}/schedule", {"at": at}, format="json").status_code,
            api.post(
                f"{url}/test-send", {"addresses": ["qa@example.com"]}, format="json"
            ).status_code,
        ]
    reads = [
        api.get(url).status_code,
        api.get(f"{url}/results").status_code,
        api.get(f"{API}/email-mailings").status_code,
        api.get(f"{API}/email-messages").status_code,
        api.get(f"{API}/email-suppressions").status_code,
    ]

    assert answers == writes
    assert reads == [200] * 5
    assert EmailMailing.objects.count() == written
    assert EmailSuppression.objects.count() == written
    assert PeriodicTask.objects.filter(task="campaigns.send_email_campaign").count() == written
    assert len(smtp_server.messages) == written


def test_another_clients_campaign_is_404_and_nothing_is_sent(
    api_a, client_b, smtp_server, django_capture_on_commit_callbacks
):
    theirs = EmailCampaignFactory(client=client_b, segments=[SegmentFactory(client=client_b)])
    ProfileFactory(client=client_b, email="b@example.com", purchases=1)
    suppression = suppression_add(client_id=client_b.pk, email="b2@example.com", reason="manual")
    url = f"{API}/email-campaigns/{theirs.pk}"
    at = (timezone.now() + timedelta(days=1)).isoformat()

    with django_capture_on_commit_callbacks(execute=False) as queued:
        answers = [
            api_a.post(f"{url}/send").status_code,
            api_a.post(
                f"{url}/test-send", {"addresses": ["qa@example.com"]}, format="json"
            ).status_code,
            api_a.post(f"{url}/schedule", {"at": at}, format="json").status_code,
            api_a.delete(f"{url}/schedule").status_code,
            api_a.get(f"{url}/results").status_code,
            api_a.delete(f"{API}/email-suppressions/{suppression.pk}").status_code,
        ]

    assert answers == [404] * 6
    assert (queued, smtp_server.messages) == ([], [])
    assert EmailMailing.objects.count() == 0
    assert PeriodicTask.objects.filter(task="campaigns.send_email_campaign").count() == 0
    assert EmailSuppression.objects.filter(pk=suppression.pk).exists()
