"""The console's home in a real browser, as each role sees it."""

import pytest
from playwright.sync_api import expect

from coremetrics.demo_data import DEMO_PASSWORD, demo_client_seed, demo_history_seed
from coremetrics.models import Membership
from segmentation.services import tables_build
from tests.factories import MembershipFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("role", ["viewer", "marketer", "admin"])
def test_each_role_sees_the_dashboard_and_what_it_may_do(live_server, page, screenshot, role):
    client = demo_client_seed(base_url=live_server.url)
    demo_history_seed(client=client, visitors=40)
    tables_build(client_id=client.pk)
    member = MembershipFactory(client=client, role=getattr(Membership.Role, role.upper()))
    member.user.set_password(DEMO_PASSWORD)
    member.user.is_staff = True
    member.user.save()

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", member.user.username)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")

    expect(page.locator("#dashboard h2").first).to_contain_text(client.name)
    expect(page.locator("#dash-totals")).to_contain_text("visitors")
    expect(page.locator("#campaigns")).to_contain_text("version")
    expect(page.locator("#work a")).to_have_count(6)
    # Viewers read; marketers and admins add; only admins manage API tokens.
    adds = page.locator("a.addlink")
    if role == "viewer":
        expect(adds).to_have_count(0)
    else:
        assert adds.count() > 0
    tokens = page.locator("a[href$='/admin/coremetrics/apitoken/']")
    assert (tokens.count() > 0) == (role == "admin")
    screenshot(f"dashboard-{role}")
