"""The patent's whole loop in a real browser: tag -> delivery -> spool -> consolidation ->
profiles -> segments -> table build -> the next answer is personalized."""

import pytest

from aggregation.models import Event, Profile
from coremetrics.demo_data import demo_client_seed, demo_history_seed
from segmentation.services import tables_build
from tests.e2e.conftest import consolidate_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BANNER = "[data-cm-placement='home-banner']"


def _banner(page) -> tuple[str, str]:
    page.wait_for_selector("html[data-cm-ready='1']", timeout=10_000)
    element = page.locator(BANNER)
    return element.get_attribute("data-cm-source"), element.locator("img").get_attribute("src")


def test_buyer_sees_buyers_banner_after_consolidation_and_build(live_server, page, screenshot):
    # Given the demo shop with a short synthetic past and its tables built
    client = demo_client_seed(base_url=live_server.url)
    demo_history_seed(client=client, visitors=40)
    tables_build(client_id=client.pk)
    shop = f"{live_server.url}/demo/shop/"

    # When a new visitor opens the shop, they are a first-time visitor before any of their
    # activity was counted: the table's answer for visitors it does not know yet
    page.goto(shop)
    assert _banner(page) == ("table", f"{live_server.url}/static/demo/banners/first.svg")
    visitor_id = next(c["value"] for c in page.context.cookies() if c["name"] == "_cmv")
    screenshot("loop-1-new-visitor-first-visit-banner")

    # and views products, adds one to the cart and buys it
    page.click("#product-driver-x1")
    page.wait_for_selector("html[data-cm-ready='1']")
    # script content is executed in its placement
    offer = page.locator("[data-cm-placement='side-offer'] .offer-note")
    assert offer.inner_text() == "Free sleeve of tees with any driver this week."
    page.click("#add-to-cart")
    page.wait_for_url("**/demo/shop/cart/")
    page.wait_for_selector("html[data-cm-ready='1']")
    page.click("#buy")
    page.wait_for_url("**/demo/shop/thanks/")
    page.wait_for_selector("html[data-cm-ready='1']")

    def all_loaded():
        events = Event.objects.filter(visitor_id=visitor_id)
        return events.filter(type="purchase").exists() and (
            events.filter(type="page_view").count() == 4
        )

    consolidate_until(all_loaded)
    tables_build(client_id=client.pk)

    # Then the profile holds what they did
    profile = Profile.objects.get(client=client, visitor_id=visitor_id)
    assert (profile.purchases, str(profile.total_spent)) == (1, "349.00")
    assert (profile.product_views, profile.cart_adds, profile.page_views) == (1, 1, 4)
    kinds = set(Event.objects.filter(visitor_id=visitor_id).values_list("type", flat=True))
    deliveries = Event.objects.filter(visitor_id=visitor_id, type="delivery")
    assert sorted(deliveries.values_list("placement_key", flat=True)) == [
        *["home-banner"] * 4,
        "side-offer",
    ]
    assert kinds == {"delivery", "page_view", "product_view", "cart_add", "purchase"}

    # and on the next page view the same browser gets the "bought at least once" banner
    page.goto(shop)
    assert _banner(page) == ("table", f"{live_server.url}/static/demo/banners/buyer.svg")
    followed = page.request.get(page.locator(f"{BANNER} a").get_attribute("href"), max_redirects=0)
    assert (followed.status, followed.headers["location"]) == (302, shop)
    screenshot("loop-2-buyer-banner")
