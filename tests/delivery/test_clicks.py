"""Click-through links (D1): recorded, and only ever to the address stored for the content."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.urls import reverse

from aggregation.models import Event
from aggregation.services import spool_consolidate
from delivery.clicks import SALT, click_link, click_read, click_token
from delivery.identity import visitor_id_issue
from segmentation.services import table_build
from tests.delivery.test_query import QUERY
from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

CLICK = reverse("delivery:click")


def _link(client, attachment, visitor_id, **extra):
    campaign = attachment.campaign
    params = {"k": campaign.client.public_key, "v": visitor_id, "p": campaign.placement.key}
    answer = client.get(QUERY, {**params, **extra}).json()["placements"][0]
    return answer["content"]["click_url"]


def test_a_click_is_recorded_and_goes_to_the_stored_address(client, published):
    attachment, buyer = published
    link = _link(client, attachment, buyer.visitor_id)

    response = client.get(link, HTTP_REFERER="https://shop.example/")
    run = spool_consolidate()

    assert (response.status_code, response["Location"]) == (302, attachment.content.click_url)
    assert response["Cache-Control"] == "no-store"
    assert run.status == "done"
    click = Event.objects.get(type="click")
    assert (click.visitor_id, click.campaign_key, click.content_id, click.table_version) == (
        buyer.visitor_id,
        attachment.campaign.key,
        attachment.content_id,
        1,
    )
    assert click.referrer == "https://shop.example/"


def _params(link):
    return {name: values[0] for name, values in parse_qs(urlsplit(link).query).items()}


def test_no_link_can_send_the_browser_elsewhere(client, published):
    attachment, buyer = published
    params = _params(_link(client, attachment, buyer.visitor_id))
    token = params["t"]
    data = signing.loads(token, salt=SALT)
    forged = signing.dumps({**data, "u": "https://evil.example/"}, salt="another-salt")
    other_key = signing.dumps({**data, "u": "https://evil.example/"}, salt=SALT, key="guessed")

    answers = [
        client.get(CLICK, {**params, "t": token[:-3] + "abc"}),
        client.get(CLICK, {**params, "t": forged}),
        client.get(CLICK, {**params, "t": other_key}),
        client.get(CLICK, {**params, "u": "https://evil.example/"}),  # extra parameters: ignored
        client.get(CLICK, {**params, "v": "made-up-visitor"}),
        client.get(CLICK, {**params, "s": "<script>"}),
        client.get(CLICK, {**params, "v": visitor_id_issue()}),  # someone else's, issued
        client.get(CLICK, {**params, "s": "5f0e1a2b.0123456789ab"}),
        client.get(CLICK),
    ]

    assert [answer.status_code for answer in answers] == [
        400,
        400,
        400,
        302,
        400,
        400,
        400,
        400,
        400,
    ]
    assert answers[3]["Location"] == attachment.content.click_url
    changed = b"this link was changed: v and s are not the ones it was given with\n"
    assert [answer.content for answer in answers[4:8]] == [
        b"v is not a visitor id issued by this server\n",
        b"s is not a session id\n",
        changed,
        changed,
    ]
    assert answers[0].content == b"this is not a click-through link of this server\n"
    spool_consolidate()
    assert Event.objects.filter(type="click").count() == 1


def test_a_node_signs_a_contents_link_once_and_every_visitor_gets_their_own(client, published):
    attachment, buyer = published
    other = ProfileFactory(client=attachment.client, purchases=1).visitor_id
    table_build(campaign_id=attachment.campaign_id)

    first, second = _link(client, attachment, buyer.visitor_id), _link(client, attachment, other)

    assert _params(first)["t"] == _params(second)["t"]
    assert (_params(first)["v"], _params(second)["v"]) == (buyer.visitor_id, other)


def test_an_old_link_has_expired(client, published, monkeypatch):
    attachment, buyer = published
    link = _link(client, attachment, buyer.visitor_id)
    monkeypatch.setattr("delivery.clicks.MAX_AGE_SECONDS", -1)

    response = client.get(link)

    assert (response.status_code, response.content) == (400, b"this link has expired\n")


def test_without_consent_the_link_is_the_plain_address(client, published):
    attachment, _ = published
    campaign = attachment.campaign
    # The anonymous answer (a=1) is the default, whose own link is not tracked either.
    campaign.default_content.click_url = "https://shop.example/all"
    campaign.default_content.save()
    from delivery.services import manifest_publish

    manifest_publish(client_id=campaign.client_id)

    link = _link(client, attachment, "", a="1")

    assert link == "https://shop.example/all"


def test_tokens_round_trip():
    token = click_token(
        client_key="k", campaign_key="c", content_id=3, version=2, target="https://shop.example/x"
    )
    visitor_id = visitor_id_issue()
    session_id = "5f0e1a2b.0123456789ab"
    link = click_link("https://d.example/d/v1/click", token=token, visitor_id=visitor_id,
                      session_id=session_id)  # fmt: skip
    mac = link.rsplit("&m=", 1)[1]

    assert click_read(token, visitor_id=visitor_id, session_id=session_id, mac=mac) == {
        "k": "k",
        "v": visitor_id,
        "s": "5f0e1a2b.0123456789ab",
        "c": "c",
        "n": 3,
        "t": 2,
        "u": "https://shop.example/x",
    }


def test_links_are_bound_under_the_secret_key_of_the_moment(settings):
    token = click_token(
        client_key="k", campaign_key="c", content_id=3, version=2, target="https://shop.example/x"
    )
    visitor_id = visitor_id_issue()
    session_id = "5f0e1a2b.0123456789ab"
    base = "https://d.example/d/v1/click"
    before = click_link(base, token=token, visitor_id=visitor_id, session_id=session_id)

    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-after-a-rotation"
    after = click_link(base, token=token, visitor_id=visitor_id, session_id=session_id)

    assert after.split("&m=")[0] == before.split("&m=")[0]
    assert after != before
    for link in (before, after):
        mac = link.rsplit("&m=", 1)[1]
        read = click_read(token, visitor_id=visitor_id, session_id=session_id, mac=mac)
        assert read["u"] == "https://shop.example/x"
