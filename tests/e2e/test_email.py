"""An email campaign in a real browser (C2, B3, B4): the marketer writes it (a template error
shows its line), sends a test and the campaign; the recipient opens the message as it arrived
at the SMTP server, clicks through to the shop and buys; the marketer reads the results."""

import os
import time

import pytest
from playwright.sync_api import expect

from aggregation.models import Event, VisitorLink
from campaigns.models import EmailMailing
from campaigns.services.email import mailing_send
from coremetrics.demo_data import DEMO_PASSWORD, demo_client_seed
from segmentation.services import tables_build
from tests.e2e.conftest import SCREENSHOTS, consolidate_until
from tests.factories import MOMENT, EventFactory, ProfileFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PERSON = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36"
)


def test_a_marketer_sends_an_email_and_sees_what_people_did(
    live_server, page, new_page, screenshot, smtp_server, settings
):
    base = live_server.url
    settings.EMAIL_BASE_URL = base
    settings.EMAIL_MACHINE_SOON_SECONDS = 0  # the recipient reads it the moment it arrives
    client = demo_client_seed(base_url=base)
    tables_build(client_id=client.pk)  # publishes the shop's tag and tables
    ann = ProfileFactory(
        client=client, email="ann@example.com", purchases=1, attributes={"first_name": "Ann"}
    )
    EventFactory(client=client, visitor_id=ann.visitor_id, occurred_at=MOMENT)

    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")

    # Writing it: a field that is not one of the profile's is refused, with its line.
    page.goto(f"{base}/admin/campaigns/emailcampaign/add/")
    page.fill("#id_name", "Driver week")
    page.select_option("#id_status", "active")
    page.select_option("#id_segments_from", label="Bought at least once")
    page.click("#id_segments_add")
    page.fill("#id_from_email", "Fairway Golf <news@fairway.example>")
    page.fill("#id_subject", "{{ attributes.first_name }}, the X1 driver is 15% off")
    page.fill("#id_html_body", "<p>Hello {{ attributes.first_name }},</p>\n<p>{{ password }}</p>")
    page.fill("#id_text_body", "Hello {{ attributes.first_name }}: {{ unsubscribe_url }}")
    page.click("input[name=_continue]")
    expect(page.locator(".field-html_body .errorlist")).to_contain_text(
        "line 2: unknown field 'password'"
    )
    screenshot("email-1-template-error")
    page.fill(
        "#id_html_body",
        "<html><body><h1>Hello {{ attributes.first_name }},</h1>\n"
        "<p>You have spent ${{ total_spent }} with us. This week the X1 Carbon Driver is 15% off."
        f'</p>\n<p><a id="shop" href="{base}/demo/shop/product/driver-x1/">See the driver</a></p>'
        "</body></html>",
    )
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    # A test to the marketer's own address, then the campaign itself.
    page.click("#test-link")
    page.fill("#id_addresses", "marketer@fairway.example")
    page.click("#submit")
    expect(page.locator(".messagelist")).to_contain_text("1 test message(s) sent.")
    assert smtp_server.recipients == ["marketer@fairway.example"]
    page.click("#send-link")
    expect(page.locator("#send-question")).to_contain_text("to 1 visitor of its segments")
    screenshot("email-2-send-now")
    page.click("#submit")
    expect(page.locator(".messagelist")).to_contain_text("has started")
    # The worker's part (its task is queued in Redis): the batches, in this process.
    mailing_send(mailing_id=EmailMailing.objects.get().pk)
    received = smtp_server.messages[-1]
    assert received["Subject"] == "Ann, the X1 driver is 15% off"

    # Ann opens the message as it arrived, in her browser, and follows its link to the shop.
    reader = new_page(user_agent=PERSON)
    reader.set_content(received.get_body(("html",)).get_content(), wait_until="networkidle")
    reader.screenshot(path=os.path.join(SCREENSHOTS, "email-3-as-received.png"), full_page=True)
    time.sleep(settings.EMAIL_MACHINE_BURST_SECONDS)  # a person reads before clicking
    reader.click("#shop")
    reader.wait_for_url("**/demo/shop/product/driver-x1/?cm_em=*")
    reader.wait_for_selector("html[data-cm-ready='1']")
    reader.click("#add-to-cart")
    reader.wait_for_url("**/demo/shop/cart/")
    reader.wait_for_selector("html[data-cm-ready='1']")
    reader.fill("#email", "ann@example.com")
    reader.click("#buy")
    reader.wait_for_url("**/demo/shop/thanks/")
    reader.wait_for_selector("html[data-cm-ready='1']")
    browser_visitor = next(c["value"] for c in reader.context.cookies() if c["name"] == "_cmv")
    consolidate_until(
        lambda: Event.objects.filter(visitor_id=browser_visitor, type="purchase").exists()
    )
    assert VisitorLink.objects.get(visitor_id=browser_visitor).canonical_id == ann.visitor_id

    # The results: one delivered, opened and clicked by a person, one purchase from it.
    page.goto(f"{base}/admin/campaigns/emailcampaign/")
    page.click("text=Driver week")
    page.click("#results-link")
    expect(page.locator("#delivered")).to_have_text("1")
    expect(page.locator("#opened")).to_contain_text("1 (100.0%)")
    expect(page.locator("#clicked")).to_contain_text("1 (100.0%)")
    expect(page.locator("#attributed")).to_contain_text("1 purchase worth $349.00")
    screenshot("email-4-results")

    # And Ann leaves: the visible link asks, the button unsubscribes her.
    reader.goto(received["List-Unsubscribe"].strip()[1:-1])
    reader.click("#unsubscribe")
    expect(reader.locator("#done")).to_have_text("ann@example.com will not get these emails again.")
    reader.screenshot(path=os.path.join(SCREENSHOTS, "email-5-unsubscribed.png"), full_page=True)
    page.reload()
    expect(page.locator("#unsubscribed")).to_have_text("1 (100.0%)")
