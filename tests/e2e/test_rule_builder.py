"""The segment rule builder in a real browser (S2): a marketer builds a rule without writing
JSON, sees the audience and a sample update as the rule changes, and errors where they are."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from aggregation.models import Event
from coremetrics.demo_data import DEMO_PASSWORD, demo_client_seed
from segmentation.models import Segment
from tests.factories import ProfileFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _shoppers(client):
    """Six buyers (two of whom bought twice this month), four browsers."""
    now = timezone.now()
    for index in range(10):
        orders = 2 if index < 2 else 1 if index < 6 else 0
        profile = ProfileFactory(
            client=client,
            visitor_id=f"shopper-{index}",
            purchases=orders,
            total_spent=Decimal(40 * orders),
            categories={"golf-clubs": 1} if index % 2 else {"balls": 2},
        )
        for order in range(orders):
            Event.objects.create(
                client=client,
                event_id=uuid.uuid4(),
                visitor_id=profile.visitor_id,
                type="purchase",
                order_id=f"{index}-{order}",
                value=Decimal(40),
                occurred_at=now - timedelta(days=order + 1),
                received_at=now,
            )


def test_a_marketer_builds_a_segment_and_sees_its_audience(live_server, page, screenshot):
    client = demo_client_seed(base_url=live_server.url)
    _shoppers(client)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    page.goto(f"{live_server.url}/admin/segmentation/segment/add/")
    status = page.locator(".rule-builder-status")

    # A new rule starts as "number of purchases is at least 1".
    expect(status).to_have_text("6 visitors match now.")
    expect(page.locator(".rule-builder-sample tbody tr")).to_have_count(6)
    screenshot("rule-builder-1-new")

    page.click(".rb-add-behaviour")
    behaviour = page.locator(".rb-behaviour")
    behaviour.get_by_label("Times").fill("2")
    behaviour.get_by_label("Times").dispatch_event("change")
    expect(status).to_have_text("2 visitors match now.")
    screenshot("rule-builder-2-bought-twice-this-month")

    condition = page.locator(".rb-condition")
    condition.get_by_label("Value").fill("")
    condition.get_by_label("Value").dispatch_event("change")
    expect(status).to_have_text("Fix the rule to see its audience:")
    expect(page.locator(".rule-builder-errors")).to_have_text(
        "rule.all[0].value: must be a whole number"
    )
    expect(condition).to_have_class("rb-row rb-condition rb-invalid")
    screenshot("rule-builder-3-inline-error")

    condition.get_by_label("Value").fill("1")
    condition.get_by_label("Value").dispatch_event("change")
    expect(status).to_have_text("2 visitors match now.")
    page.fill("#id_name", "Bought twice this month")
    page.click("input[name=_save]")
    page.wait_for_url(f"{live_server.url}/admin/segmentation/segment/")

    segment = Segment.objects.get(client=client, name="Bought twice this month")
    assert segment.rule == {
        "all": [
            {"field": "purchases", "op": "gte", "value": 1},
            {"event": "purchase", "count": {"op": "gte", "value": 2}, "within_days": 30},
        ]
    }
    page.goto(f"{live_server.url}/admin/segmentation/segment/{segment.pk}/change/")
    expect(status).to_have_text("2 visitors match now.")
    expect(page.locator(".rb-behaviour")).to_have_count(1)
    screenshot("rule-builder-4-saved")
