import json

import pytest
from django.urls import reverse

from aggregation.spool import spool_seal_open
from delivery.clicks import click_read
from delivery.identity import visitor_id_is_valid, visitor_id_issue
from delivery.query import PIXEL, content_fragment
from delivery.services import manifest_publish
from tests.factories import CampaignFactory, SiteFactory

pytestmark = pytest.mark.django_db

QUERY = reverse("delivery:query")


def _spooled(settings) -> list[dict]:
    lines = []
    for path in spool_seal_open():
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_query_answers_from_published_table_without_database(
    query_client, published, django_assert_num_queries
):
    attachment, buyer = published
    campaign = attachment.campaign
    params = {"k": campaign.client.public_key, "v": buyer.visitor_id, "p": campaign.placement.key}

    with django_assert_num_queries(0):
        response = query_client.get(QUERY, params)

    assert response.status_code == 200
    data = response.json()
    assert data["visitor"] == buyer.visitor_id
    link = data["placements"][0]["content"].pop("click_url")
    assert link.startswith("http://testserver/d/v1/click?t=")
    token, rest = link.split("?t=")[1].split("&v=")
    visitor_and_session, mac = rest.split("&m=")
    assert visitor_and_session == f"{buyer.visitor_id}&s={data['session']}"
    read = click_read(token, visitor_id=buyer.visitor_id, session_id=data["session"], mac=mac)
    assert read["u"] == attachment.content.click_url
    assert data["placements"] == [
        {
            "placement": campaign.placement.key,
            "campaign": campaign.key,
            "content": {
                "id": attachment.content.pk,
                "name": attachment.content.name,
                "type": "image",
                "url": attachment.content.url,
                "html": "",
                "alt": "",
            },
            "version": 1,
            "source": "table",
        }
    ]


def test_unknown_visitor_gets_default_content_and_answer_is_recorded(
    query_client, published, settings
):
    attachment, _ = published
    campaign = attachment.campaign
    visitor_id = visitor_id_issue()

    response = query_client.get(
        QUERY,
        {
            "k": campaign.client.public_key,
            "v": visitor_id,
            "p": f"{campaign.placement.key},nowhere",
            "u": "https://shop.example/",
        },
    )

    [answer, unknown] = response.json()["placements"]
    assert (answer["source"], answer["content"]["id"]) == ("default", campaign.default_content_id)
    assert unknown == {
        "placement": "nowhere",
        "campaign": None,
        "content": None,
        "version": None,
        "source": "unknown-placement",
    }
    [record] = _spooled(settings)
    assert {key: record[key] for key in ("type", "client", "visitor_id", "placement_key")} == {
        "type": "delivery",
        "client": campaign.client_id,
        "visitor_id": visitor_id,
        "placement_key": campaign.placement.key,
    }
    assert (record["content_id"], record["table_version"]) == (campaign.default_content_id, 1)
    assert record["session_id"] == response.json()["session"]


def test_campaign_without_table_answers_default_once_manifest_published(query_client):
    campaign = CampaignFactory()
    manifest_publish(client_id=campaign.client_id)

    response = query_client.get(
        QUERY,
        {"k": campaign.client.public_key, "v": visitor_id_issue(), "p": campaign.placement.key},
    )

    [answer] = response.json()["placements"]
    assert (answer["source"], answer["version"]) == ("default", None)
    assert answer["content"]["id"] == campaign.default_content_id


def test_session_kept_while_fresh_and_renewed_when_idle(query_client, published):
    attachment, buyer = published
    params = {"k": attachment.client.public_key, "v": buyer.visitor_id}
    first = query_client.get(QUERY, params).json()["session"]

    kept = query_client.get(QUERY, {**params, "s": first, "i": "60"}).json()["session"]
    renewed = query_client.get(QUERY, {**params, "s": first, "i": str(31 * 60)}).json()["session"]

    assert kept == first
    assert renewed != first


def test_cors_allows_registered_origins_only(query_client, published):
    attachment, buyer = published
    SiteFactory(client=attachment.client, origin="https://portal.example")
    manifest_publish(client_id=attachment.client_id)
    params = {"k": attachment.client.public_key, "v": buyer.visitor_id}

    allowed = query_client.get(QUERY, params, HTTP_ORIGIN="https://portal.example")
    refused = query_client.get(QUERY, params, HTTP_ORIGIN="https://evil.example")

    assert allowed["Access-Control-Allow-Origin"] == "https://portal.example"
    assert "Access-Control-Allow-Origin" not in refused


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({}, 400, "k (the client key) is required"),
        ({"k": "no such key!"}, 400, "k is not a client key"),
        ({"k": "cm_unknownclient"}, 404, "unknown client key"),
        ({"k": "KEY"}, 400, "v (the visitor id) is required; get one from /d/v1/visitor"),
        ({"k": "KEY", "v": "guessed-id"}, 400, "v is not a visitor id issued by this server"),
        (
            {"k": "KEY", "v": "VID", "p": "a,<script>"},
            400,
            "p must be placement keys (letters, digits, - and _)",
        ),
        ({"k": "KEY", "v": "VID", "p": ",".join(f"p{n}" for n in range(21))}, 400,
         "p names more than 20 placements"),
        ({"k": "KEY", "v": "VID", "i": "soon"}, 400, "i (seconds idle) must be a number"),
        ({"k": "KEY", "v": "VID", "i": "-5"}, 400, "i (seconds idle) must be a number"),
        ({"k": "KEY", "v": "VID", "u": "x" * 2001}, 400, "u is longer than 2000 characters"),
    ],
)  # fmt: skip
def test_bad_query_is_refused_with_reason_and_not_recorded(
    query_client, published, settings, params, status, error
):
    attachment, buyer = published
    replace = {"KEY": attachment.client.public_key, "VID": buyer.visitor_id}
    params = {name: replace.get(value, value) for name, value in params.items()}

    response = query_client.get(QUERY, params)

    assert (response.status_code, response.json()) == (status, {"error": error})
    assert _spooled(settings) == []


def test_query_rejects_post(query_client, published):
    attachment, buyer = published

    response = query_client.post(f"{QUERY}?k={attachment.client.public_key}&v={buyer.visitor_id}")

    assert response.status_code == 405


def test_deactivated_client_serves_no_campaigns(query_client, published):
    attachment, buyer = published
    attachment.client.is_active = False
    attachment.client.save(update_fields=["is_active"])
    manifest_publish(client_id=attachment.client_id)

    response = query_client.get(
        QUERY,
        {
            "k": attachment.client.public_key,
            "v": buyer.visitor_id,
            "p": attachment.campaign.placement.key,
        },
    )

    [answer] = response.json()["placements"]
    assert (answer["source"], answer["content"]) == ("unknown-placement", None)


def test_visitor_endpoint_issues_valid_unique_ids(client):
    campaign = CampaignFactory()
    manifest_publish(client_id=campaign.client_id)
    url = reverse("delivery:visitor-issue") + f"?k={campaign.client.public_key}"

    answers = [client.post(url).json() for _ in range(3)]

    assert len({answer["visitor"] for answer in answers}) == 3
    assert all(visitor_id_is_valid(answer["visitor"]) for answer in answers)
    assert client.post(reverse("delivery:visitor-issue") + "?k=cm_nobody").status_code == 404


def test_anonymous_query_answers_defaults_and_records_nothing(query_client, published, settings):
    attachment, buyer = published
    params = {"k": attachment.client.public_key, "a": "1", "p": attachment.campaign.placement.key}

    response = query_client.get(QUERY, {**params, "v": buyer.visitor_id})

    data = response.json()
    assert (data["visitor"], data["session"]) == (None, None)
    [answer] = data["placements"]
    assert (answer["source"], answer["content"]["id"]) == (
        "default",
        attachment.campaign.default_content_id,
    )
    assert _spooled(settings) == []


def test_global_privacy_control_header_gets_defaults_and_no_record(client, published, settings):
    attachment, buyer = published
    params = {
        "k": attachment.client.public_key,
        "v": buyer.visitor_id,
        "p": attachment.campaign.placement.key,
    }

    response = client.get(QUERY, params, HTTP_SEC_GPC="1")
    issue = client.post(
        reverse("delivery:visitor-issue") + f"?k={attachment.client.public_key}", HTTP_SEC_GPC="1"
    )

    [answer] = response.json()["placements"]
    assert (answer["source"], response.json()["visitor"]) == ("default", None)
    assert (issue.status_code, issue.json()) == (
        403,
        {"error": "Global Privacy Control is on: no visitor id is issued"},
    )
    assert _spooled(settings) == []


FRAGMENT = reverse("delivery:fragment")
IMAGE = reverse("delivery:image")


def test_the_fragment_form_pushes_the_content_itself_and_records_it(
    query_client, published, settings
):
    attachment, buyer = published
    campaign = attachment.campaign
    params = {"k": campaign.client.public_key, "v": buyer.visitor_id, "p": campaign.placement.key}

    response = query_client.get(FRAGMENT, params)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    html = response.content.decode()
    assert html.startswith('<a href="http://testserver/d/v1/click?t=')
    assert html.endswith(f'"><img src="{attachment.content.url}" alt=""></a>')
    [record] = _spooled(settings)
    assert (record["visitor_id"], record["content_id"]) == (buyer.visitor_id, attachment.content_id)


@pytest.mark.parametrize(
    ("kind", "fields", "html"),
    [
        ("image", {"url": "https://cdn.example/a.png?x=1&y=\"2\"", "alt": "<b>"},
         '<img src="https://cdn.example/a.png?x=1&amp;y=&quot;2&quot;" alt="&lt;b&gt;">'),
        ("script", {"url": "https://cdn.example/a.js"},
         '<script src="https://cdn.example/a.js" async></script>'),
        ("video", {"url": "https://cdn.example/a.mp4"},
         '<video src="https://cdn.example/a.mp4" controls playsinline></video>'),
        ("audio", {"url": "https://cdn.example/a.mp3"},
         '<audio src="https://cdn.example/a.mp3" controls></audio>'),
        ("html", {"html": "<p>Spring sale</p>"}, "<p>Spring sale</p>"),
    ],
)  # fmt: skip
def test_every_content_type_has_its_fragment_with_addresses_escaped(kind, fields, html):
    content = {"type": kind, "url": "", "alt": "", "html": "", "click_url": "", **fields}

    assert content_fragment(content) == html
    assert content_fragment(None) == ""


def test_the_image_form_redirects_to_the_image_and_records_the_delivery(
    query_client, published, settings
):
    attachment, buyer = published
    campaign = attachment.campaign
    params = {"k": campaign.client.public_key, "v": buyer.visitor_id, "p": campaign.placement.key}

    response = query_client.get(IMAGE, params)
    anonymous = query_client.get(IMAGE, {**params, "v": ""})

    assert (response.status_code, response["Location"]) == (302, attachment.content.url)
    assert response["Cache-Control"] == "no-store"
    assert (anonymous.status_code, anonymous["Location"]) == (302, campaign.default_content.url)
    [record] = _spooled(settings)
    assert (record["visitor_id"], record["content_id"]) == (buyer.visitor_id, attachment.content_id)


def test_the_image_form_answers_a_pixel_when_the_placement_shows_no_image(query_client, published):
    attachment, _ = published
    campaign = attachment.campaign
    campaign.default_content.type = "html"
    campaign.default_content.html = "<p>Hello</p>"
    campaign.default_content.save()
    manifest_publish(client_id=campaign.client_id)
    params = {"k": campaign.client.public_key, "p": campaign.placement.key}

    response = query_client.get(IMAGE, params)

    assert (response.status_code, response["Content-Type"]) == (200, "image/gif")
    assert response.content == PIXEL


def test_a_placement_list_asked_again_is_answered_or_refused_as_the_first_time(
    query_client, published, settings
):
    attachment, buyer = published
    params = {"k": attachment.client.public_key, "v": buyer.visitor_id}
    key = attachment.campaign.placement.key

    answers = [
        query_client.get(QUERY, {**params, "p": placements})
        for placements in (f"other,{key},other", "a,<script>") * 2
    ]

    assert [answer.status_code for answer in answers] == [200, 400, 200, 400]
    assert [
        [placement["placement"] for placement in answers[n].json()["placements"]] for n in (0, 2)
    ] == [["other", key], ["other", key]]
    assert [answers[n].json()["error"] for n in (1, 3)] == [
        "p must be placement keys (letters, digits, - and _)"
    ] * 2
    assert len(_spooled(settings)) == 2


def test_the_single_placement_forms_refuse_several_or_unknown_placements(
    query_client, published, settings
):
    attachment, buyer = published
    params = {"k": attachment.client.public_key, "v": buyer.visitor_id}

    answers = [
        query_client.get(form, {**params, "p": placements})
        for form in (FRAGMENT, IMAGE)
        for placements in (f"{attachment.campaign.placement.key},other", "", "nowhere")
    ]

    assert [(answer.status_code, answer.json()["error"]) for answer in answers] == [
        (400, "p must name exactly one placement"),
        (400, "p must name exactly one placement"),
        (404, "no active campaign has this placement"),
    ] * 2
    assert _spooled(settings) == []
