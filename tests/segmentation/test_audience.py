"""The rule builder's live audience (S2): counts and samples of the asker's client only."""

import json

import pytest
from django.urls import reverse

from tests.factories import ProfileFactory

pytestmark = pytest.mark.django_db

URL = "admin:segmentation-segment-audience"
BOUGHT = {"field": "purchases", "op": "gte", "value": 1}


def _ask(client, body):
    return client.post(reverse(URL), json.dumps(body), content_type="application/json")


@pytest.fixture
def shoppers(client_a, client_b):
    ProfileFactory(client=client_a, visitor_id="a-buyer", purchases=2, categories={"clubs": 1})
    ProfileFactory(client=client_a, visitor_id="a-browser", purchases=0)
    ProfileFactory(client=client_b, visitor_id="b-buyer", purchases=5, categories={"tennis": 3})


def test_a_viewer_sees_the_audience_of_their_own_client(client, viewer, shoppers, client_b):
    # Naming another client changes nothing for a member: their own client is counted.
    response = _ask(client, {"rule": BOUGHT, "client": client_b.pk})

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], [row["visitor_id"] for row in body["sample"]]) == (1, ["a-buyer"])
    assert body["categories"] == ["clubs"]


def test_a_superuser_names_the_client(client, superuser, shoppers, client_b):
    chosen = _ask(client, {"rule": BOUGHT, "client": client_b.pk})
    unnamed = _ask(client, {"rule": BOUGHT})

    assert [row["visitor_id"] for row in chosen.json()["sample"]] == ["b-buyer"]
    assert (unnamed.status_code, unnamed.json()) == (400, {"errors": ["choose a client first"]})


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ("not json", ["the request is not JSON"]),
        ([1], ["the request is not a JSON object"]),
        ({"rule": {"field": "age", "op": "gt", "value": 3}}, ["rule.field: unknown field 'age'"]),
        ({}, ["rule: must be an object"]),
    ],
)
def test_a_bad_request_gets_its_errors(client, marketer, body, errors):
    raw = body if isinstance(body, str) else json.dumps(body)
    response = client.post(reverse(URL), raw, content_type="application/json")

    assert (response.status_code, response.json()) == (400, {"errors": errors})


def test_outsiders_and_gets_are_refused(client, outsider):
    assert _ask(client, {"rule": BOUGHT}).status_code == 403
    assert client.get(reverse(URL)).status_code == 403
