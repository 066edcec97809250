"""Tracking in email (C2, B3, B4): the pixel, the signed redirect, one-click unsubscribe, the
join of the clicking browser to the recipient, machine opens and clicks, attribution, lift."""

import json
import re
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from aggregation.models import Event, VisitorLink
from aggregation.records import record_new
from aggregation.services import spool_consolidate
from aggregation.spool import spool_append, spool_seal_open
from campaigns.mailtracking import Addresses, MessageRef, message_token
from campaigns.models import EmailActivity, EmailMailing, EmailMessage, EmailSuppression
from campaigns.selectors import email_campaign_results
from campaigns.services.email import mailing_send, mailing_start
from delivery.identity import visitor_id_issue
from delivery.services import manifest_publish
from tests.factories import (
    MOMENT,
    EmailCampaignFactory,
    EventFactory,
    ProfileFactory,
    SegmentFactory,
)

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
SCANNER = "python-requests/2.32.3"
BUYERS = {"field": "purchases", "op": "gte", "value": 1}


def _spooled() -> list[dict]:
    return [
        json.loads(line) for path in spool_seal_open() for line in path.read_text().splitlines()
    ]


def _token(client_id=1, message_id=2):
    return message_token(MessageRef(client_id, message_id))


def test_the_pixel_answers_an_image_without_the_database_and_spools_the_open(client):
    # No django_db mark: any query would fail this test, as a database that is down would.
    token = _token(7, 42)

    response = client.get(f"/e/o/{token}.gif", HTTP_USER_AGENT=BROWSER, REMOTE_ADDR="198.51.100.23")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response["Cache-Control"] == "no-store, max-age=0"
    assert response.content.startswith(b"GIF89a") and len(response.content) == 43
    [record] = _spooled()
    assert (record["type"], record["client"], record["visitor_id"]) == (
        "email_open",
        7,
        "message-42",
    )
    assert record["properties"] == {
        "message": 42, "user_agent": BROWSER, "ip": "198.51.100.0", "decoy": False,
    }  # fmt: skip


def test_a_pixel_of_a_changed_token_is_still_an_image_but_records_nothing(client):
    token = _token().replace("1.2:", "1.3:")

    response = client.get(f"/e/o/{token}.gif")

    assert (response.status_code, response["Content-Type"]) == (200, "image/gif")
    assert _spooled() == []


def test_a_link_redirects_only_to_the_address_it_was_signed_for(client):
    token = _token()
    link = Addresses(base="", token=token).link("https://shop.example/sale?x=1")

    response = client.get(link, HTTP_USER_AGENT=BROWSER)

    assert response.status_code == 302
    assert (
        response["Location"] == f"https://shop.example/sale?x=1&cm_em={token.replace(':', '%3A')}"
    )
    [record] = _spooled()
    assert (record["type"], record["url"]) == ("email_click", "https://shop.example/sale?x=1")
    changed = link.replace("shop.example", "evil.example")
    refused = client.get(changed)
    assert refused.status_code == 400
    assert refused.content == b"this link was changed: it does not go where the message said\n"
    assert _spooled() == []


def test_the_decoy_link_is_recorded_and_goes_nowhere(client):
    link = Addresses(base="", token=_token()).link("https://t.example/", is_decoy=True)

    response = client.get(link, HTTP_USER_AGENT=SCANNER)

    assert response.status_code == 204
    assert _spooled()[0]["properties"]["decoy"] is True


@pytest.fixture
def sent(client_a, smtp_server, settings):
    """One campaign mailed to ann@example.com through the SMTP server: (message row, the
    received message)."""
    settings.EMAIL_BASE_URL = "http://testserver"
    campaign = EmailCampaignFactory(
        client=client_a, segments=[SegmentFactory(client=client_a, rule=BUYERS)]
    )
    ann = ProfileFactory(client=client_a, email="ann@example.com", purchases=1)
    EventFactory(client=client_a, visitor_id=ann.visitor_id, occurred_at=MOMENT)  # a past visit
    mailing_send(mailing_id=mailing_start(campaign=campaign).pk)
    return EmailMessage.objects.get(), smtp_server.messages[0]


def _links(received) -> list[str]:
    html = received.get_body(("html",)).get_content()
    return [link.replace("&amp;", "&") for link in re.findall(r'href="([^"]+)"', html)]


@pytest.mark.django_db
def test_one_click_unsubscribe_suppresses_the_address_once(client, sent):
    message, received = sent
    url = received["List-Unsubscribe"].strip()[1:-1].removeprefix("http://testserver")

    asked = client.get(url)
    assert asked.status_code == 200 and b'id="unsubscribe"' in asked.content
    assert EmailSuppression.objects.count() == 0  # a scanner's GET changes nothing

    done = client.post(
        url, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    again = client.post(
        url, "List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )

    assert (done.status_code, again.status_code) == (200, 200)
    assert b"ann@example.com will not get these emails again." in done.content
    suppression = EmailSuppression.objects.get()
    assert (suppression.email, suppression.reason, suppression.message_id) == (
        "ann@example.com", "unsubscribed", message.pk,
    )  # fmt: skip
    message.refresh_from_db()
    assert message.unsubscribed_at is not None
    assert client.post("/e/u/1.2.x:bad").status_code == 400


@pytest.mark.django_db
def test_activity_of_another_clients_message_is_not_loaded(client_b, sent):
    message, _ = sent
    forged = record_new(
        client_id=client_b.pk, kind="email_open", visitor_id="x.y",
        occurred_at=timezone.now(), properties={"message": message.pk},
    )  # fmt: skip
    honest = {**forged, "event_id": str(uuid.uuid4()), "client": message.client_id}
    spool_append([forged, honest])

    spool_consolidate()
    spool_consolidate()  # the same records again (a re-run): nothing twice

    assert list(EmailActivity.objects.values_list("client_id", "message_id")) == [
        (message.client_id, message.pk)
    ]


def _collect(client, key, visitor, events):
    now = int(time.time() * 1000)
    batch = {"visitor": visitor, "session": f"{int(time.time()):x}.0123456789ab", "sent_at": now}
    batch["events"] = [{"id": str(uuid.uuid4()), "at": now, **event} for event in events]
    url = f"{reverse('aggregation:collect')}?k={key}"
    response = client.post(url, json.dumps(batch), content_type="text/plain")
    assert response.status_code == 202, response.content


@pytest.mark.django_db
def test_from_sending_to_a_purchase_attributed_to_a_persons_click(client, sent, settings):
    message, received = sent
    settings.EMAIL_MACHINE_SOON_SECONDS = 0  # the steps below follow at once
    manifest_publish(client_id=message.client_id)
    sale, decoy, _ = (link.removeprefix("http://testserver") for link in _links(received))
    pixel = re.search(
        r'<img src="http://testserver(/e/o/[^"]+)"', received.get_body(("html",)).get_content()
    )

    client.get(sale, HTTP_USER_AGENT=SCANNER)  # a link scanner at the recipient's provider
    client.get(decoy, HTTP_USER_AGENT=SCANNER)
    client.get(pixel.group(1), HTTP_USER_AGENT=GMAIL_PROXY)  # Ann opens it in Gmail
    time.sleep(settings.EMAIL_MACHINE_BURST_SECONDS + 0.5)  # and clicks a while later
    landing = client.get(sale, HTTP_USER_AGENT=BROWSER)["Location"]
    # Her browser, a visitor of its own, lands on the shop and buys.
    browser = visitor_id_issue()
    key = message.client.public_key
    _collect(client, key, browser, [{"type": "page_view", "url": landing}])
    _collect(client, key, browser, [
        {"type": "purchase", "order_id": "A-1", "value": "80.00", "url": "https://golfshop.example/thanks"},
    ])  # fmt: skip

    spool_consolidate()

    link = VisitorLink.objects.get(visitor_id=browser)
    assert (link.canonical_id, link.email) == (message.visitor_id, "ann@example.com")
    assert Event.objects.filter(type__startswith="email").count() == 0
    assert EmailActivity.objects.count() == 4
    results = email_campaign_results(campaign=message.campaign)
    totals = results["totals"]
    assert {name: totals[name] for name in ("sent", "delivered", "bounced", "unsubscribed")} == {
        "sent": 1, "delivered": 1, "bounced": 0, "unsubscribed": 0,
    }  # fmt: skip
    assert (totals["opened_raw"], totals["opened_human"]) == (1, 1)
    assert (totals["clicked_raw"], totals["clicked_human"]) == (1, 1)
    assert (totals["purchases"], totals["revenue"]) == (1, Decimal("80.00"))
    assert dict(results["machine_reasons"]) == {"decoy link": 2}


@pytest.mark.django_db
def test_a_landing_with_another_clients_token_joins_nobody(client, client_b, sent):
    _, received = sent
    manifest_publish(client_id=client_b.pk)
    sale = _links(received)[0].removeprefix("http://testserver")
    landing = client.get(sale, HTTP_USER_AGENT=BROWSER)["Location"].replace(
        "golfshop.example", "bravo.example"
    )
    stranger = visitor_id_issue()

    _collect(client, client_b.public_key, stranger, [{"type": "page_view", "url": landing}])
    spool_consolidate()

    assert VisitorLink.objects.count() == 0
    assert Event.objects.get(visitor_id=stranger).client_id == client_b.pk


@pytest.mark.django_db
def test_the_lift_against_the_holdout_counts_purchases_within_the_window(client_a, smtp_server):
    campaign = EmailCampaignFactory(
        client=client_a, holdout_share=5000, attribution_days=7,
        segments=[SegmentFactory(client=client_a, rule=BUYERS)],
    )  # fmt: skip
    for index in range(400):
        ProfileFactory(client=client_a, email=f"p{index}@example.com", purchases=1)
    mailing = mailing_start(campaign=campaign)
    mailing_send(mailing_id=mailing.pk)
    # As if it went out ten days ago: the window after it has closed.
    start = timezone.now() - timedelta(days=10)
    EmailMailing.objects.filter(pk=mailing.pk).update(started_at=start)
    mailing.messages.filter(status="sent").update(sent_at=start)
    mailed = list(mailing.messages.filter(status="sent").values_list("visitor_id", flat=True))
    held = list(mailing.messages.filter(status="held_out").values_list("visitor_id", flat=True))
    # Half the mailed buy within the week, a tenth of the held out; a late purchase is ignored.
    buyers = [(visitor, "50.00") for visitor in mailed[::2]] + [(v, "50.00") for v in held[::10]]
    records = [
        record_new(
            client_id=client_a.pk,
            kind="purchase",
            visitor_id=visitor,
            occurred_at=start + timedelta(days=2),
            order_id=f"o{index}",
            value=value,
        )
        for index, (visitor, value) in enumerate(buyers)
    ]
    records.append(
        record_new(
            client_id=client_a.pk,
            kind="purchase",
            visitor_id=held[1],
            occurred_at=start + timedelta(days=9),
            order_id="late",
            value="500.00",
        )
    )
    spool_append(records)
    spool_consolidate()

    holdout = email_campaign_results(campaign=campaign)["holdout"]

    assert (holdout["mailed"].visitors, holdout["held_out"].visitors) == (len(mailed), len(held))
    assert holdout["mailed"].conversions == len(mailed[::2])
    assert holdout["held_out"].conversions == len(held[::10])
    assert holdout["conversion"].is_significant
    assert holdout["conversion"].difference == pytest.approx(
        len(mailed[::2]) / len(mailed) - len(held[::10]) / len(held)
    )


@pytest.mark.django_db
def test_a_providers_bounce_report_suppresses_the_address(sent):
    from anymail.signals import AnymailTrackingEvent, tracking

    message, _ = sent
    EmailMessage.objects.filter(pk=message.pk).update(provider_id="esp-123")

    tracking.send(
        sender=object,
        event=AnymailTrackingEvent(event_type="bounced", message_id="esp-123"),
        esp_name="Test",
    )

    message.refresh_from_db()
    assert message.status == "bounced"
    assert EmailSuppression.objects.get().reason == "bounced"


@pytest.mark.django_db
def test_a_landing_after_the_attribution_window_joins_nobody(client, sent):
    message, received = sent
    manifest_publish(client_id=message.client_id)
    # Sent thirty days ago; the campaign's window is seven days.
    EmailMessage.objects.filter(pk=message.pk).update(sent_at=timezone.now() - timedelta(days=30))
    sale = _links(received)[0].removeprefix("http://testserver")
    landing = client.get(sale, HTTP_USER_AGENT=BROWSER)["Location"]
    stranger = visitor_id_issue()

    _collect(client, message.client.public_key, stranger, [{"type": "page_view", "url": landing}])
    spool_consolidate()

    assert VisitorLink.objects.count() == 0
    assert Event.objects.get(visitor_id=stranger).url == landing
