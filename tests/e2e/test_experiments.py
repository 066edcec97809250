"""An A/B test's results in a real browser (C1): lift, intervals, the end with a winner."""

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from aggregation.models import Event, Profile
from campaigns.models import Assignment, Experiment, ExperimentGroup
from campaigns.services import experiment_start
from coremetrics.demo_data import DEMO_PASSWORD, demo_client_seed
from segmentation.services import table_build
from tests.factories import AttachmentFactory, CampaignFactory, ContentFactory, EventFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_marketer_reads_the_results_and_ends_the_test(live_server, page, screenshot):
    client = demo_client_seed(base_url=live_server.url)
    campaign = CampaignFactory(client=client, key="discounts", name="Discounts")
    attachment = AttachmentFactory(
        campaign=campaign,
        segment__client=client,
        segment__name="Repeat buyers",
        segment__rule={"field": "purchases", "op": "gte", "value": 1},
        content__client=client,
        content__name="No offer",
    )
    experiment = Experiment.objects.create(
        client=client, attachment=attachment, name="Golf discounts", minimum_days=7, salt="e2e"
    )
    for key, share, content in [("control", 3400, None), ("ten-off", 3300, "10% off"),
                                ("twenty-off", 3300, "20% off")]:  # fmt: skip
        ExperimentGroup.objects.create(
            client=client, experiment=experiment, key=key, name=key, is_control=key == "control",
            share=share, shows="default" if content is None else "content",
            content=ContentFactory(client=client, name=content) if content else None,
        )  # fmt: skip
    now = timezone.now()
    Profile.objects.bulk_create(
        Profile(client=client, visitor_id=f"golfer-{i}", purchases=1, first_seen_at=now,
                last_seen_at=now) for i in range(3000)
    )  # fmt: skip
    experiment_start(experiment=experiment)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=now - timedelta(days=10))
    table_build(campaign_id=campaign.pk)
    rng = random.Random(4)
    rates = {"control": 0.05, "ten-off": 0.055, "twenty-off": 0.09}
    events = []
    shown = {group.key: group.content_id for group in experiment.groups.all()}
    shown["control"] = campaign.default_content_id
    assignments = Assignment.objects.order_by("visitor_id")
    for visitor, group in assignments.values_list("visitor_id", "group_key"):
        seen = now - timedelta(days=rng.randrange(1, 9))
        events.append(
            _event(client, visitor, "delivery", seen, campaign_key="discounts",
                   content_id=shown[group])
        )  # fmt: skip
        if rng.random() < rates[group]:
            value = Decimal(rng.randrange(40, 200))
            bought = seen + timedelta(hours=1)
            events.append(
                _event(client, visitor, "purchase", bought, order_id=visitor, value=value)
            )
    Event.objects.bulk_create(events)

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    page.goto(f"{live_server.url}/admin/campaigns/experiment/{experiment.pk}/change/")
    page.click("text=Results")
    screenshot("experiment-1-results")

    expect(page.locator("#group-twenty-off td.significant").first).to_be_visible()
    expect(page.locator("#suggestion")).to_contain_text("twenty-off")

    page.click("#end-form input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Twenty-off won")
    experiment.refresh_from_db()
    attachment.refresh_from_db()
    assert (experiment.status, attachment.content.name) == ("ended", "20% off")
    screenshot("experiment-2-ended")

    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.click("#content-main .object-tools >> text=Report")
    expect(page.locator("#daily div")).to_have_count(30)
    expect(page.locator("#report")).to_contain_text("Repeat buyers")
    screenshot("experiment-3-campaign-report")


def _event(client, visitor_id, kind, moment, **fields):
    return EventFactory.build(
        client=client, visitor_id=visitor_id, type=kind, occurred_at=moment, received_at=moment,
        **fields,
    )  # fmt: skip
