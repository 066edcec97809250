"""Table versions in a real browser (B1): a preview's diff, publishing it, and explaining what
a visitor gets."""

import pytest
from playwright.sync_api import expect

from coremetrics.demo_data import DEMO_PASSWORD, demo_client_seed
from segmentation.models import TableVersion
from segmentation.services import table_build
from tests.factories import AttachmentFactory, CampaignFactory, ProfileFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_marketer_previews_publishes_and_explains(live_server, page, screenshot):
    client = demo_client_seed(base_url=live_server.url)
    campaign = CampaignFactory(
        client=client, name="Spring banners", default_content__name="welcome"
    )
    AttachmentFactory(
        campaign=campaign,
        segment__client=client,
        segment__rule={"field": "purchases", "op": "gte", "value": 1},
        content__client=client,
        content__name="thank-you banner",
        priority=1,
    )
    shoppers = [ProfileFactory(client=client, purchases=0) for _ in range(4)]
    table_build(campaign_id=campaign.pk)
    for shopper in shoppers[:3]:
        shopper.purchases = 1
        shopper.save()
    preview = table_build(campaign_id=campaign.pk, publish=False)

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    page.goto(f"{live_server.url}/admin/segmentation/tableversion/{preview.pk}/change/")
    expect(page.locator(".field-moves")).to_contain_text(
        "3 visitors move from welcome to thank-you banner"
    )
    screenshot("versions-1-preview")

    page.click("#publish-form button")
    expect(page.locator(".messagelist")).to_contain_text("serves now")
    preview.refresh_from_db()
    assert preview.status == TableVersion.Status.PUBLISHED
    screenshot("versions-2-published")

    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.click("text=Explain a visitor")
    page.fill("#visitor", shoppers[0].visitor_id)
    page.click("#explain-form input[type=submit]")
    expect(page.locator("#served")).to_contain_text(f"Version {preview.number}")
    expect(page.locator("#served")).to_contain_text("thank-you banner")
    expect(page.locator("#attachments tr.winner")).to_contain_text("yes: wins")
    screenshot("versions-3-explain")
