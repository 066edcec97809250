import json
import time
import uuid

import pytest
from django.urls import reverse

from aggregation.spool import spool_seal_open
from delivery.identity import visitor_id_issue
from delivery.services import manifest_publish
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db

COLLECT = reverse("aggregation:collect")
SESSION = "6b000000.0123456789ab"


@pytest.fixture
def key():
    campaign = CampaignFactory()
    manifest_publish(client_id=campaign.client_id)
    return campaign.client.public_key


def _event(**fields) -> dict:
    now = int(time.time() * 1000)
    return {
        "id": str(uuid.uuid4()),
        "type": "page_view",
        "at": now,
        "url": "https://s.example/",
        **fields,
    }


def _batch(events: list, **fields) -> str:
    now = int(time.time() * 1000)
    batch = {"visitor": visitor_id_issue(), "session": SESSION, "sent_at": now, "events": events}
    return json.dumps({**batch, **fields})


def _post(client, key, body: str | bytes):
    return client.post(f"{COLLECT}?k={key}", data=body, content_type="text/plain")


def _spooled() -> list[dict]:
    return [
        json.loads(line) for path in spool_seal_open() for line in path.read_text().splitlines()
    ]


def test_batch_is_spooled_whole(client, key):
    events = [
        _event(),
        _event(type="cart_add", product_id="driver", value=349),
        _event(type="purchase", order_id="A1", value="349.00", currency="usd", email="a@b.example"),
    ]

    response = _post(client, key, _batch(events))

    assert (response.status_code, response.json()) == (202, {"accepted": 3, "rejected": []})
    records = _spooled()
    assert [record["event_id"] for record in records] == [event["id"] for event in events]
    purchase = records[2]
    assert (purchase["value"], purchase["currency"], purchase["email"]) == (
        "349.00",
        "USD",
        "a@b.example",
    )


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ("[]", ["body must be a JSON object"]),
        (
            _batch([_event()], visitor="made-up"),
            ["visitor must be a visitor id issued by this server"],
        ),
        (_batch([_event()], session=5), ["session must be a session id issued by this server"]),
        (_batch([_event()], sent_at="now"), ["sent_at must be milliseconds since the epoch"]),
        (_batch([]), ["events must be a non-empty list"]),
        (_batch([_event() for _ in range(101)]), ["events holds more than 100 events"]),
    ],
)  # fmt: skip
def test_invalid_batch_is_refused_with_reasons_and_nothing_spooled(client, key, body, errors):
    response = _post(client, key, body)

    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid batch", "errors": errors},
    )
    assert _spooled() == []


def test_valid_events_are_kept_and_each_refused_one_is_named(client, key):
    events = [_event(), _event(type="purchase"), _event(value=True, type="cart_add")]

    response = _post(client, key, _batch(events))

    assert response.status_code == 202
    assert response.json() == {
        "accepted": 1,
        "rejected": [
            {"index": 1, "id": events[1]["id"], "error": "a purchase needs a value"},
            {"index": 2, "id": events[2]["id"], "error": "value must be a number"},
        ],
    }
    assert [record["event_id"] for record in _spooled()] == [events[0]["id"]]


def test_batch_with_no_valid_event_is_refused_and_nothing_spooled(client, key):
    events = [_event(type="teleport"), "not an event"]

    response = _post(client, key, _batch(events))

    assert (response.status_code, response.json()) == (
        400,
        {
            "error": "invalid events",
            "rejected": [
                {
                    "index": 0,
                    "id": events[0]["id"],
                    "error": "type must be one of page_view, product_view, category_view, "
                    "search, cart_add, cart_remove, checkout, purchase, custom",
                },
                {"index": 1, "id": None, "error": "must be an object"},
            ],
        },
    )
    assert _spooled() == []


def test_not_json_and_oversized_and_unknown_client(client, key):
    assert _post(client, key, b"{not json").json() == {"error": "body is not JSON"}
    oversized = _post(client, key, _batch([_event(url="https://s.example/" + "x" * 1900)] * 30))
    assert (oversized.status_code, oversized.json()) == (
        413,
        {"error": "body is larger than 40960 bytes"},
    )
    unknown = _post(client, "cm_nobody", _batch([_event()]))
    assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown client key"})
    assert client.get(f"{COLLECT}?k={key}").status_code == 405
    assert _spooled() == []


def test_spool_failure_answers_503_not_200(client, key, settings, tmp_path):
    # The spool directory cannot be created: a path where a plain file stands.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.SPOOL_DIR = blocker / "spool"

    response = _post(client, key, _batch([_event()]))

    assert (response.status_code, response.json()) == (
        503,
        {"error": "cannot store events now; retry later"},
    )


def test_a_client_over_its_rate_gets_429_with_retry_after(client, key, settings):
    from aggregation import views

    settings.COLLECT_RATE_PER_SECOND = 2
    settings.COLLECT_RATE_BURST_SECONDS = 2
    views._limiter.cache_clear()
    try:
        first = _post(client, key, _batch([_event(), _event(), _event()]))
        second = _post(client, key, _batch([_event(), _event()]))
    finally:
        views._limiter.cache_clear()

    assert first.status_code == 202
    assert (second.status_code, second.json(), second["Retry-After"]) == (
        429,
        {"error": "too many events for this client; retry later"},
        "1",
    )
    assert len(_spooled()) == 3


def test_global_privacy_control_header_records_nothing(client, key):
    response = client.post(
        f"{COLLECT}?k={key}", data=_batch([_event()]), content_type="text/plain", HTTP_SEC_GPC="1"
    )

    assert (response.status_code, response.json()) == (
        403,
        {"error": "Global Privacy Control is on: nothing is recorded"},
    )
    assert _spooled() == []
