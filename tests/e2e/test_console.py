"""The marketer's console in a real browser: login, their client's rows only, the snippet."""

import importlib

import pytest
from django.apps import apps

from campaigns.models import Campaign
from coremetrics.demo_data import DEMO_PASSWORD, demo_client_seed
from tests.factories import CampaignFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def test_marketer_sees_only_their_clients_campaigns(live_server, page, screenshot):
    client = demo_client_seed(base_url=live_server.url)
    CampaignFactory(name="Rival summer sale")  # another client's campaign

    _login(page, live_server.url, "marketer")
    screenshot("console-1-marketer-home")
    page.goto(f"{live_server.url}/admin/campaigns/campaign/")

    names = page.locator("#result_list tbody th a").all_inner_texts()
    assert sorted(names) == sorted(
        Campaign.objects.filter(client=client).values_list("name", flat=True)
    )
    assert "Rival summer sale" not in page.content()
    screenshot("console-2-marketer-campaigns")

    page.goto(f"{live_server.url}/admin/coremetrics/client/{client.pk}/change/")
    snippet = page.locator("#tag-snippet").inner_text()
    assert f"{live_server.url}/t/v1/{client.public_key}.js" in snippet
    screenshot("console-3-client-snippet")


def test_superuser_sees_every_client_and_the_beat_schedule(live_server, page, screenshot):
    # The schedule comes from a data migration, which an earlier transactional test's flush
    # removed: run that migration's step again.
    migration = importlib.import_module("segmentation.migrations.0002_beat_schedule")
    migration.schedule_create(apps, None)
    demo_client_seed(base_url=live_server.url)
    CampaignFactory(name="Rival summer sale")

    _login(page, live_server.url, "admin")
    page.goto(f"{live_server.url}/admin/campaigns/campaign/")
    assert "Rival summer sale" in page.locator("#result_list").inner_text()
    page.goto(f"{live_server.url}/admin/django_celery_beat/periodictask/")
    schedule = page.locator("#result_list").inner_text()
    assert "Consolidate the spool" in schedule
    assert "Rebuild the lookup tables" in schedule
    screenshot("console-4-beat-schedule")


def test_a_client_admin_creates_an_api_token_and_sees_its_key_once(live_server, page, screenshot):
    from coremetrics.models import ApiToken, Membership
    from tests.factories import MembershipFactory, UserFactory

    client = demo_client_seed(base_url=live_server.url)
    user = UserFactory(username="shop-admin", password=DEMO_PASSWORD, is_staff=True)
    MembershipFactory(user=user, client=client, role=Membership.Role.ADMIN)

    _login(page, live_server.url, "shop-admin")
    page.goto(f"{live_server.url}/admin/coremetrics/apitoken/add/")
    page.fill("#id_name", "nightly export")
    page.select_option("#id_scope", "read")
    page.click("input[name=_save]")

    message = page.locator(".messagelist .warning").inner_text()
    assert message.startswith("The key of nightly export, shown this once: cm_")
    token = ApiToken.objects.get(client=client)
    assert token.prefix in message
    success = page.locator(".messagelist .success").inner_text()
    assert f"nightly export ({token.prefix}…)" in success
    screenshot("console-5-api-token-created")
