"""The tag (T1-T5) in Chromium, on client pages served from other origins than delivery."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from aggregation.models import Event
from aggregation.services import spool_consolidate
from campaigns.models import Content
from delivery.services import manifest_publish
from delivery.tag import client_tag_config, tag_body, tag_snippet
from segmentation.services import tables_build
from tests.e2e.sites import page_html
from tests.factories import CampaignFactory, ClientFactory, ContentFactory, SiteFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTS = ["shop.localhost", "www.shop.localhost", "checkout.shop.localhost", "portal.localhost"]
PLACEMENTS = """
<div data-cm-placement="hero"><p class="default">Default hero</p></div>
<div data-cm-placement="promo-script"></div>
<div data-cm-placement="promo-html"><p class="default">Default promo</p></div>
<div data-cm-placement="promo-video"></div>
<div data-cm-placement="promo-audio"></div>
"""


@pytest.fixture
def shop(live_server, sites):
    """A client with one campaign per content type, its sites registered for CORS."""
    client = ClientFactory(tag_timeout_ms=1500)
    for host in HOSTS:
        SiteFactory(client=client, origin=sites.origin(host))
    static = f"{live_server.url}/static/demo"
    contents = {
        "hero": ContentFactory(
            client=client,
            url=f"{static}/banners/default.svg",
            click_url="https://shop.example/spring",
            alt_text="Spring",
        ),
        "promo-script": ContentFactory(
            client=client, type=Content.Type.SCRIPT, url=f"{static}/offer.js", click_url=""
        ),
        "promo-html": ContentFactory(
            client=client,
            type=Content.Type.HTML,
            url="",
            click_url="",
            html='<strong class="html-promo">Members save 15%</strong>',
        ),
        "promo-video": ContentFactory(
            client=client, type=Content.Type.VIDEO, url=f"{static}/media/swing.webm"
        ),
        "promo-audio": ContentFactory(
            client=client, type=Content.Type.AUDIO, url=f"{static}/media/chime.webm"
        ),
    }
    for key, content in contents.items():
        CampaignFactory(
            client=client, placement__client=client, placement__key=key, default_content=content
        )
    tables_build(client_id=client.pk)
    return client


def _serve(sites, live_server, client, *, body=PLACEMENTS, path="/", **options) -> str:
    snippet = options.pop("snippet", None) or tag_snippet(
        base_url=live_server.url, public_key=client.public_key
    )
    headers = options.pop("headers", {})
    sites.pages[path] = (page_html(snippet, body, **options), headers)
    return path


def _requests(page, fragment: str) -> list:
    seen = []
    page.on("request", lambda request: fragment in request.url and seen.append(request))
    return seen


def _ready(page, value="1"):
    page.wait_for_selector(f"html[data-cm-ready='{value}']", timeout=10_000)


def _cookies(page) -> dict:
    return {cookie["name"]: cookie for cookie in page.context.cookies()}


def _storage(page) -> int:
    return page.evaluate("localStorage.length")


def _loaded(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return
        spool_consolidate()
        time.sleep(0.3)


def test_one_query_renders_every_content_type(live_server, sites, shop, page, screenshot):
    path = _serve(sites, live_server, shop)
    queries = _requests(page, "/d/v1/query")

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)

    assert len(queries) == 1
    link = page.locator("[data-cm-placement='hero'] a")
    # Through our redirect, which records the click and goes on to the stored address.
    href = link.get_attribute("href")
    assert href.startswith(f"{live_server.url}/d/v1/click?t=")
    followed = page.request.get(href, max_redirects=0)
    assert (followed.status, followed.headers["location"]) == (302, "https://shop.example/spring")
    assert link.locator("img").get_attribute("alt") == "Spring"
    note = page.locator("[data-cm-placement='promo-script'] .offer-note")
    assert note.inner_text() == "Free sleeve of tees with any driver this week."
    assert page.locator(".html-promo").inner_text() == "Members save 15%"
    page.wait_for_function(
        "document.querySelector('[data-cm-placement=promo-video] video').currentTime > 0"
    )
    assert page.evaluate(
        "document.querySelector('[data-cm-placement=promo-audio] audio').play().then(() => true)"
    )
    assert page.locator(".default").count() == 0
    screenshot("tag-1-every-content-type")


def test_placement_keeps_default_when_no_answer_within_timeout(live_server, sites, shop, page):
    shop.tag_timeout_ms = 600
    shop.save(update_fields=["tag_timeout_ms"])
    manifest_publish(client_id=shop.pk)
    path = _serve(sites, live_server, shop)

    def late(route):
        time.sleep(1.5)
        route.continue_()

    page.route("**/d/v1/query*", late)
    page.goto(sites.origin("shop.localhost") + path)
    _ready(page, "timeout")
    page.wait_for_timeout(2500)

    assert page.locator("[data-cm-placement='hero'] .default").inner_text() == "Default hero"
    assert page.locator("[data-cm-placement='hero'] img").count() == 0
    assert page.get_attribute("html", "data-cm-ready") == "timeout"


def test_visitor_cookie_spans_subdomains_for_13_months(live_server, sites, shop, page):
    path = _serve(sites, live_server, shop)
    issued = _requests(page, "/d/v1/visitor")

    page.goto(sites.origin("www.shop.localhost") + path)
    _ready(page)
    first = _cookies(page)["_cmv"]
    page.goto(sites.origin("checkout.shop.localhost") + path)
    _ready(page)

    assert first["domain"] == ".shop.localhost"
    days = (first["expires"] - datetime.now(UTC).timestamp()) / 86400
    assert 394 < days <= 395
    assert _cookies(page)["_cmv"]["value"] == first["value"]
    assert len(issued) == 1


def test_third_party_portal_gets_content_and_unregistered_origin_does_not(
    live_server, sites, shop, page
):
    path = _serve(sites, live_server, shop)

    page.goto(sites.origin("portal.localhost") + path)
    _ready(page)
    assert page.locator("[data-cm-placement='hero'] img").count() == 1

    page.goto(sites.origin("elsewhere.localhost") + path)
    _ready(page, "error")
    assert page.locator("[data-cm-placement='hero'] .default").inner_text() == "Default hero"


TRACKING = """
<button id="go" onclick="
  cm('track', 'product_view', {product_id: 'driver-x1', category: 'clubs', value: 349});
  cm('track', 'category_view', {category: 'clubs'});
  cm('track', 'search', {query: 'drivers'});
  cm('track', 'cart_add', {product_id: 'driver-x1', value: 349});
  cm('track', 'cart_remove', {product_id: 'driver-x1', value: 349});
  cm('track', 'cart_add', {product_id: 'driver-x1', value: 349});
  cm('track', 'checkout',
     {value: 349, items: [{product_id: 'driver-x1', quantity: 1, price: 349}]});
  cm('track', 'purchase', {order_id: 'A-1', value: 349, currency: 'usd', email: 'ann@example.com',
                           items: [{product_id: 'driver-x1', quantity: 1, price: 349}]});
  cm('track', 'newsletter_signup', {list: 'weekly'});
  location.href = '/next';
">Buy</button>
"""


def test_every_event_type_is_batched_sent_on_page_hide_and_stored(live_server, sites, shop, page):
    path = _serve(sites, live_server, shop, body=TRACKING)
    _serve(sites, live_server, shop, body="<p>next</p>", path="/next")
    sent = _requests(page, "/c/v1/collect")

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    page.click("#go")
    page.wait_for_url("**/next")
    visitor_id = _cookies(page)["_cmv"]["value"]
    tracked = Event.objects.filter(client=shop, visitor_id=visitor_id).exclude(type="delivery")
    _loaded(lambda: tracked.count() == 12)

    counts = {
        kind: tracked.filter(type=kind).count()
        for kind in set(tracked.values_list("type", flat=True))
    }
    assert counts == {
        "page_view": 2,
        "product_view": 1,
        "category_view": 1,
        "search": 1,
        "cart_add": 2,
        "cart_remove": 1,
        "checkout": 1,
        "purchase": 1,
        "custom": 1,
    }
    purchase = tracked.get(type="purchase")
    assert (purchase.order_id, str(purchase.value), purchase.currency, purchase.email) == (
        "A-1",
        "349.00",
        "USD",
        "ann@example.com",
    )
    assert purchase.properties == {
        "items": [{"product_id": "driver-x1", "quantity": 1, "price": "349.00"}]
    }
    assert tracked.get(type="search").properties == {"query": "drivers"}
    assert tracked.get(type="custom").properties == {"name": "newsletter_signup", "list": "weekly"}
    assert tracked.get(type="category_view").category == "clubs"
    assert len(sent) < 12  # batched: fewer requests than events
    # Version 7 ids: their first 48 bits are when the tag made them, in milliseconds.
    for event_id, occurred_at in tracked.values_list("event_id", "occurred_at"):
        assert event_id.version == 7
        made = datetime.fromtimestamp(int(event_id.hex[:12], 16) / 1000, UTC)
        assert abs(made - occurred_at) < timedelta(seconds=5)


def test_purchase_lost_to_the_network_is_retried_and_counted_once(live_server, sites, shop, page):
    body = """<button id="buy"
      onclick="cm('track', 'purchase', {order_id: 'B-2', value: 99})">Buy</button>"""
    path = _serve(sites, live_server, shop, body=body)
    failures = []

    def network_down(route):
        failures.append(route.request.url)
        route.abort("internetdisconnected")

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    page.route("**/c/v1/collect*", network_down)
    page.click("#buy")
    page.wait_for_timeout(2500)
    assert len(failures) >= 1
    page.unroute("**/c/v1/collect*")
    visitor_id = _cookies(page)["_cmv"]["value"]
    page.wait_for_function("localStorage.getItem('_cmq') === '[]'", timeout=20_000)
    # Leaving the page may send what is queued once more; the event id makes it count once.
    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    purchases = Event.objects.filter(client=shop, visitor_id=visitor_id, type="purchase")
    _loaded(purchases.exists)
    spool_consolidate()

    assert purchases.count() == 1
    assert purchases.get().order_id == "B-2"


CONSENT = """
<div data-cm-placement="hero"><p class="default">Default hero</p></div>
<button id="yes" onclick="cm('consent', 'granted')">Accept</button>
<button id="no" onclick="cm('consent', 'denied')">Decline</button>
<button id="view" onclick="cm('track', 'product_view', {product_id: 'putter'})">View</button>
"""


def test_consent_required_stores_and_sends_nothing_until_granted(live_server, sites, shop, page):
    shop.consent_mode = shop.ConsentMode.REQUIRED
    shop.save(update_fields=["consent_mode"])
    manifest_publish(client_id=shop.pk)
    path = _serve(sites, live_server, shop, body=CONSENT)
    queries, issued, sent = (
        _requests(page, p) for p in ("/d/v1/query", "/d/v1/visitor", "/c/v1/collect")
    )

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    page.click("#view")
    page.wait_for_timeout(1000)

    # default content renders with no cookie, no storage, and no id or URL sent
    assert page.locator("[data-cm-placement='hero'] img").count() == 1
    assert (_cookies(page), _storage(page), issued, sent) == ({}, 0, [], [])
    assert "a=1" in queries[0].url and "v=" not in queries[0].url and "u=" not in queries[0].url

    page.click("#yes")
    page.wait_for_function("document.cookie.indexOf('_cmv=') >= 0")
    visitor_id = _cookies(page)["_cmv"]["value"]
    views = Event.objects.filter(client=shop, visitor_id=visitor_id, type="product_view")
    _loaded(views.exists)
    assert views.count() == 1  # the view made before consent, sent once consent came

    page.click("#no")
    assert {name: cookie["value"] for name, cookie in _cookies(page).items()} == {"_cmc": "denied"}
    assert _storage(page) == 0

    # the choice holds on the next page: nothing issued, stored or sent
    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    page.click("#view")
    page.wait_for_timeout(1000)
    assert set(_cookies(page)) == {"_cmc"}
    assert (_storage(page), len(issued), len(sent)) == (0, 1, 1)


GPC_ON = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
DNT_ON = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'})"


@pytest.mark.parametrize(
    "signal",
    [
        {"script": GPC_ON, "headers": {"Sec-GPC": "1"}},
        {"script": DNT_ON, "headers": {"DNT": "1"}},
    ],
    ids=["global-privacy-control", "do-not-track"],
)  # fmt: skip
def test_privacy_signal_means_no_cookie_no_storage_no_tracking(
    live_server, sites, shop, new_page, signal
):
    page = new_page(extra_http_headers=signal["headers"])
    page.add_init_script(signal["script"])
    path = _serve(sites, live_server, shop, body=CONSENT)
    issued, sent = _requests(page, "/d/v1/visitor"), _requests(page, "/c/v1/collect")

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    page.click("#yes")  # the page's consent cannot override the browser's signal
    page.click("#view")
    page.wait_for_timeout(1500)

    assert page.locator("[data-cm-placement='hero'] img").count() == 1
    assert (_cookies(page), _storage(page), issued, sent) == ({}, 0, [], [])


def test_strict_content_security_policy_with_nonce(live_server, sites, shop, page):
    nonce = "r4nd0m-n0nce"
    csp = f"script-src 'nonce-{nonce}'; object-src 'none'; base-uri 'none'"
    path = _serve(sites, live_server, shop, nonce=nonce, headers={"Content-Security-Policy": csp})
    refused = []
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and refused.append(message.text),
    )

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)

    note = page.locator("[data-cm-placement='promo-script'] .offer-note")
    assert note.inner_text() == "Free sleeve of tees with any driver this week."
    assert refused == []


def test_hostile_input_is_never_html_and_failures_stay_inside_the_tag(
    live_server, sites, shop, page
):
    body = (
        PLACEMENTS
        + """<script>
      cm(); cm('track'); cm('track', null, 5); cm('placement', {}); cm('consent', 'maybe');
      cm('config', null); cm('track', 'purchase', {items: 7, email: '<b>x</b>@y'});
    </script>"""
    )
    path = _serve(sites, live_server, shop, body=body)
    hostile = (
        "?q=%3Cimg%20src%3Dx%20onerror%3Dwindow.pwned%3D1%3E"
        "#%3Cscript%3Ewindow.pwned=2%3C/script%3E"
    )

    page.goto(sites.origin("shop.localhost") + path + hostile)
    _ready(page)
    page.route("**/d/v1/query*", lambda route: route.fulfill(status=200, body="{not json"))
    page.reload()
    _ready(page, "error")

    assert page.evaluate("window.pwned") is None
    assert page.locator("[data-cm-placement='hero'] .default").inner_text() == "Default hero"


def test_custom_global_name_and_commands_queued_before_load(live_server, sites, shop, page):
    snippet = (
        tag_snippet(base_url=live_server.url, public_key=shop.public_key)
        .replace("'cm'", "'shopTag'")
        .replace(
            "cm('track','page_view')", "shopTag('track','page_view');shopTag('placement','late')"
        )
    )
    body = '<div data-cm-placement="hero"><p class="default">Default hero</p></div>'
    path = _serve(sites, live_server, shop, body=body, snippet=snippet)
    queries = _requests(page, "/d/v1/query")

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)

    assert page.evaluate("typeof window.cm") == "undefined"
    assert page.evaluate("window.shopTag.loaded") is True
    assert "p=late%2Chero" in queries[0].url
    assert page.locator("[data-cm-placement='hero'] img").count() == 1


def test_pinned_snippet_loads_only_the_file_its_hash_names(live_server, sites, shop, page):
    pinned = tag_body(client_tag_config(shop))
    good = tag_snippet(base_url=live_server.url, public_key=shop.public_key, pinned=pinned)
    tampered = good.replace(pinned.integrity, "sha384-" + "A" * 64)
    _serve(sites, live_server, shop, snippet=good, path="/good")
    _serve(sites, live_server, shop, snippet=tampered, path="/tampered")

    page.goto(sites.origin("shop.localhost") + "/good")
    _ready(page)
    assert page.locator("[data-cm-placement='hero'] img").count() == 1

    page.goto(sites.origin("shop.localhost") + "/tampered")
    page.wait_for_timeout(1500)
    assert page.evaluate("window.cm.loaded") is None
    assert page.locator("[data-cm-placement='hero'] .default").inner_text() == "Default hero"


def test_a_visitor_id_the_server_does_not_know_is_replaced(live_server, sites, shop, page):
    path = _serve(sites, live_server, shop)
    page.context.add_cookies(
        [{"name": "_cmv", "value": "made-up-id", "url": sites.origin("shop.localhost")}]
    )

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)

    assert _cookies(page)["_cmv"]["value"] != "made-up-id"
    assert page.locator("[data-cm-placement='hero'] img").count() == 1


def test_session_is_kept_between_pages_and_renewed_by_a_new_campaign(
    live_server, sites, shop, page
):
    path = _serve(sites, live_server, shop)
    origin = sites.origin("shop.localhost")

    def session_of(url: str) -> str:
        with page.expect_response(lambda response: "/d/v1/query" in response.url) as answer:
            page.goto(url)
        _ready(page)
        return answer.value.json()["session"]

    assert session_of(origin + path + "?utm_campaign=50%off")  # a stray "%" breaks nothing
    first = session_of(origin + path)
    same = session_of(origin + path + "?utm_campaign=spring")
    still = session_of(origin + path + "?utm_campaign=spring")
    renewed = session_of(origin + path + "?utm_campaign=autumn")

    assert first != same  # arriving through a campaign starts its session
    assert same == still
    assert renewed not in (first, same)


def test_privacy_header_alone_still_shows_defaults_and_keeps_nothing(
    live_server, sites, shop, new_page
):
    page = new_page(extra_http_headers={"Sec-GPC": "1"})  # the page is not told
    path = _serve(sites, live_server, shop, body=CONSENT)
    sent = _requests(page, "/c/v1/collect")

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    page.click("#view")
    page.wait_for_timeout(1000)

    assert page.locator("[data-cm-placement='hero'] img").count() == 1
    assert (_cookies(page), _storage(page), sent) == ({}, 0, [])


def test_tag_included_twice_runs_once(live_server, sites, shop, page):
    snippet = tag_snippet(base_url=live_server.url, public_key=shop.public_key)
    path = _serve(sites, live_server, shop, snippet=snippet + snippet)
    queries = _requests(page, "/d/v1/query")

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    page.wait_for_timeout(500)

    assert len(queries) == 1
    assert page.locator(".offer-note").count() == 1


def test_events_are_sent_when_storage_is_blocked(live_server, sites, shop, new_page):
    page = new_page()
    page.add_init_script("Storage.prototype.setItem = function () { throw new Error('blocked'); };")
    body = """<button id="buy"
      onclick="cm('track', 'purchase', {order_id: 'S-1', value: 5})">Buy</button>"""
    path = _serve(sites, live_server, shop, body=body)

    page.goto(sites.origin("shop.localhost") + path)
    _ready(page)
    page.click("#buy")
    visitor_id = _cookies(page)["_cmv"]["value"]
    purchases = Event.objects.filter(client=shop, visitor_id=visitor_id, type="purchase")
    _loaded(purchases.exists)

    assert purchases.count() == 1
