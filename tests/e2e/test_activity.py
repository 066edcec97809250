"""The activity review (S1) in a real browser, with its charts."""

import random
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from aggregation.models import Event
from coremetrics.demo_data import DEMO_PASSWORD, demo_client_seed
from tests.factories import ProfileFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_marketer_reviews_the_last_30_days(live_server, page, screenshot):
    client = demo_client_seed(base_url=live_server.url)
    rng = random.Random(7)
    now = timezone.now()
    events = []
    for index in range(60):
        visitor_id = f"visitor-{index}"
        ProfileFactory(
            client=client, visitor_id=visitor_id, source=rng.choice(["direct", "search", "email"])
        )
        for visit in range(rng.randrange(1, 5)):
            moment = now - timedelta(days=rng.randrange(30), hours=rng.randrange(12))
            events.append(
                Event(
                    client=client,
                    event_id=uuid.uuid4(),
                    visitor_id=visitor_id,
                    type="page_view",
                    session_id=f"{visitor_id}-{visit}",
                    occurred_at=moment,
                    received_at=moment,
                )
            )
            if rng.random() < 0.3:
                events.append(
                    Event(
                        client=client,
                        event_id=uuid.uuid4(),
                        visitor_id=visitor_id,
                        type="purchase",
                        session_id=f"{visitor_id}-{visit}",
                        order_id=f"{index}-{visit}",
                        value=Decimal(rng.randrange(10, 300)),
                        occurred_at=moment,
                        received_at=moment,
                    )
                )
    Event.objects.bulk_create(events)  # fmt: skip

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    page.goto(f"{live_server.url}/admin/aggregation/profile/")
    page.click("text=Review activity")

    expect(page.locator("#activity-totals")).to_contain_text("60")
    expect(page.locator("#chart-purchasers tr")).to_have_count(2)
    expect(page.locator("#daily div")).to_have_count(30)
    screenshot("activity-1-last-30-days")
