import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from aggregation.records import (
    TEXT_LIMITS,
    TRACKED_TYPES,
    RecordError,
    delivery_record,
    event_from_tag,
    event_id_new,
    record_new,
    record_parse,
    spool_line_decode,
)

RECEIVED_AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SENT_AT_MS = RECEIVED_AT.timestamp() * 1000
EVENT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
VISITOR_ID = "AbCdEfGhIjKlMnOpQrSt.0123456789"
SESSION_ID = "6b000000.0123456789ab"


TYPE_ERROR = (
    "type must be one of page_view, product_view, category_view, search, cart_add, "
    "cart_remove, checkout, purchase, custom"
)


def _from_tag(event, *, sent_at_ms=SENT_AT_MS, received_at=RECEIVED_AT):
    return event_from_tag(
        event,
        client_id=7,
        visitor_id=VISITOR_ID,
        session_id=SESSION_ID,
        sent_at_ms=sent_at_ms,
        received_at=received_at,
    )


def _event(**fields):
    return {"id": EVENT_ID, "type": "page_view", "at": SENT_AT_MS - 2500, **fields}


@pytest.mark.parametrize("kind", TRACKED_TYPES)
def test_event_from_tag_gives_the_full_record(kind):
    event = {
        "id": EVENT_ID.upper(),
        "type": kind,
        "at": SENT_AT_MS - 2500,
        "url": "https://shop.example/shoes?size=42",
        "referrer": "https://www.google.com/",
        "product_id": "sku-42",
        "category": "shoes",
        "query": "trail shoes",
        "order_id": "order-9",
        "value": 19.9,
        "currency": "eur",
        "email": "  Ann@Example.com ",
        "properties": {"size": "M", "quantity": 2, "gift": True, "note": None},
    }
    properties = {"size": "M", "quantity": 2, "gift": True, "note": None}

    assert _from_tag(event) == {
        "event_id": EVENT_ID,
        "client": 7,
        "type": kind,
        "visitor_id": VISITOR_ID,
        "session_id": SESSION_ID,
        "occurred_at": "2026-11-01T11:59:57.500000+00:00",
        "received_at": "2026-11-01T12:00:00+00:00",
        "url": "https://shop.example/shoes?size=42",
        "referrer": "https://www.google.com/",
        "campaign_key": "",
        "placement_key": "",
        "content_id": None,
        "table_version": None,
        "product_id": "sku-42",
        "category": "shoes",
        "order_id": "order-9",
        "value": "19.90",
        "currency": "EUR",
        "email": "Ann@Example.com",
        "properties": {**properties, "query": "trail shoes"} if kind == "search" else properties,
    }


def test_event_from_tag_keeps_the_lines_of_an_order():
    items = [{"product_id": "driver", "quantity": 2, "price": 349}, {"product_id": "balls"}]

    record = _from_tag(_event(type="purchase", value=698, items=items))

    assert record["properties"] == {
        "items": [
            {"product_id": "driver", "quantity": 2, "price": "349.00"},
            {"product_id": "balls", "quantity": 1, "price": "0.00"},
        ]
    }


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ("driver", "items must be a list of at most 50 items"),
        ([{}] * 51, "items must be a list of at most 50 items"),
        (["driver"], "items[0] must be an object"),
        (
            [{"product_id": "a", "quantity": 0}],
            "items[0].quantity must be a whole number from 1 to 10000",
        ),
        (
            [{"product_id": "a", "price": -1}],
            "items[0].price must be between 0 and 999999999999.99",
        ),
        ([{"product_id": 5}], "items[0].product_id must be a string"),
    ],
)
def test_event_from_tag_refuses_bad_order_lines(items, error):
    with pytest.raises(RecordError) as raised:
        _from_tag(_event(type="checkout", items=items))

    assert str(raised.value) == error


def test_search_needs_its_query():
    with pytest.raises(RecordError) as raised:
        _from_tag(_event(type="search"))

    assert str(raised.value) == "a search needs a query"


def test_event_from_tag_fills_absent_fields_with_empty_values():
    assert _from_tag({"id": EVENT_ID, "type": "custom", "at": SENT_AT_MS, "url": None}) == {
        "category": "",
        "event_id": EVENT_ID,
        "client": 7,
        "type": "custom",
        "visitor_id": VISITOR_ID,
        "session_id": SESSION_ID,
        "occurred_at": "2026-11-01T12:00:00+00:00",
        "received_at": "2026-11-01T12:00:00+00:00",
        "url": "",
        "referrer": "",
        "campaign_key": "",
        "placement_key": "",
        "content_id": None,
        "table_version": None,
        "product_id": "",
        "order_id": "",
        "value": None,
        "currency": "",
        "email": "",
        "properties": {},
    }


@pytest.mark.parametrize(
    ("value", "stored"),
    [(0, "0.00"), ("12.346", "12.35"), (999999999999.99, "999999999999.99"), ("7", "7.00")],
)
def test_event_from_tag_stores_value_with_two_decimals(value, stored):
    assert _from_tag(_event(type="purchase", value=value))["value"] == stored


@pytest.mark.parametrize(
    ("tag_clock", "gap_ms", "occurred_at"),
    [
        (timedelta(hours=1), 90_000, RECEIVED_AT - timedelta(seconds=90)),
        (timedelta(days=-3), 1_000, RECEIVED_AT - timedelta(seconds=1)),
        (timedelta(0), 0, RECEIVED_AT),
        (timedelta(0), -5_000, RECEIVED_AT),
        (timedelta(0), 7 * 86_400_000, RECEIVED_AT - timedelta(days=7)),
    ],
    ids=["tag-clock-ahead", "tag-clock-behind", "no-gap", "at-after-sent", "seven-days"],
)
def test_event_from_tag_applies_the_send_gap_to_the_server_clock(tag_clock, gap_ms, occurred_at):
    sent_at_ms = (RECEIVED_AT + tag_clock).timestamp() * 1000

    record = _from_tag(_event(at=sent_at_ms - gap_ms), sent_at_ms=sent_at_ms)

    assert record["occurred_at"] == occurred_at.isoformat()
    assert record["received_at"] == RECEIVED_AT.isoformat()


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ("page_view", "must be an object"),
        (_event(id="not-a-uuid"), "id must be a UUID"),
        ({"type": "page_view", "at": SENT_AT_MS}, "id must be a UUID"),
        (
            _event(type="delivery"),
            TYPE_ERROR,
        ),
        (
            _event(type=None),
            TYPE_ERROR,
        ),
        (_event(at="2026-11-01T12:00:00Z"), "at must be milliseconds since the epoch"),
        (_event(at=True), "at must be milliseconds since the epoch"),
        (_event(at=None), "at must be milliseconds since the epoch"),
        (_event(at=SENT_AT_MS - 7 * 86_400_000 - 1), "at is more than 7 days before sent_at"),
        (_event(value=-1), "value must be between 0 and 999999999999.99"),
        (_event(value=-0.01), "value must be between 0 and 999999999999.99"),
        (_event(value=float("nan")), "value must be between 0 and 999999999999.99"),
        (_event(value="NaN"), "value must be between 0 and 999999999999.99"),
        (_event(value=float("inf")), "value must be between 0 and 999999999999.99"),
        (_event(value=1e12), "value must be between 0 and 999999999999.99"),
        (_event(value="999999999999.995"), "value must be between 0 and 999999999999.99"),
        (_event(value=True), "value must be a number"),
        (_event(value="ten"), "value must be a number"),
        (_event(value=[5]), "value must be a number"),
        (_event(type="purchase"), "a purchase needs a value"),
        (_event(type="purchase", value=None), "a purchase needs a value"),
        (_event(email="ann@"), "email is not a valid address"),
        (_event(email="ann example.com"), "email is not a valid address"),
        (_event(email="a" * 250 + "@x.com"), "email is longer than 254 characters"),
        (_event(currency="U$D"), "currency must be a three-letter code"),
        (_event(currency="EU"), "currency must be a three-letter code"),
        (_event(currency="EURO"), "currency is longer than 3 characters"),
        (_event(currency=978), "currency must be a string"),
        (_event(url="https://shop.example/" + "a" * 1980), "url is longer than 2000 characters"),
        (_event(referrer="r" * 2001), "referrer is longer than 2000 characters"),
        (_event(product_id="p" * 101), "product_id is longer than 100 characters"),
        (_event(order_id=["o-1"]), "order_id must be a string"),
        (_event(url=42), "url must be a string"),
        (
            _event(properties={"size": {"eu": 42}}),
            "properties.size must be a string, number or boolean",
        ),
        (_event(properties={"tags": ["a"]}), "properties.tags must be a string, number or boolean"),
        (_event(properties=["size"]), "properties must be an object"),
        (_event(properties={"note": "x" * 2040}), "properties are larger than 2048 bytes"),
    ],
)
def test_event_from_tag_refuses_with_exact_error(event, error):
    with pytest.raises(RecordError) as raised:
        _from_tag(event)

    assert str(raised.value) == error


def test_event_from_tag_accepts_properties_up_to_the_limit():
    properties = {"note": "x" * 2036}
    assert len(json.dumps(properties)) == 2048

    assert _from_tag(_event(properties=properties))["properties"] == properties


@pytest.mark.parametrize(
    ("at", "error"),
    [
        (-1e300, "at must be milliseconds since the epoch"),
        (-1e14, "at is more than 7 days before sent_at"),
        (float("-inf"), "at must be milliseconds since the epoch"),
    ],
)
def test_event_from_tag_refuses_an_at_before_any_date(at, error):
    with pytest.raises(RecordError) as raised:
        _from_tag(_event(at=at))

    assert str(raised.value) == error


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "https://shop.example/\x00"},
        {"product_id": "sku\x00"},
        {"properties": {"ratio": float("nan")}},
        {"properties": {"note": "a\x00b"}},
    ],
    ids=["nul-in-url", "nul-in-product-id", "nan-in-properties", "nul-in-properties"],
)
def test_event_from_tag_refuses_text_the_database_cannot_store(fields):
    with pytest.raises(RecordError):
        _from_tag(_event(**fields))


def test_event_from_tag_refuses_a_lone_surrogate():
    with pytest.raises(RecordError):
        _from_tag(_event(url="https://shop.example/\ud800"))


def _delivery():
    return delivery_record(
        client_id=3,
        visitor_id=VISITOR_ID,
        session_id=SESSION_ID,
        placement_key="hero",
        campaign_key="spring",
        content_id=12,
        table_version=4,
        url="https://shop.example/",
        referrer="https://blog.example/",
        at=RECEIVED_AT,
    )


def _line(record):
    return json.dumps(record).encode()


def test_record_parse_reads_back_a_delivery_record():
    record = _delivery()

    assert record_parse(_line(record)) == {
        **record,
        "occurred_at": RECEIVED_AT,
        "received_at": RECEIVED_AT,
    }
    assert record["type"] == "delivery"
    assert record["value"] is None


def test_record_parse_reads_back_a_tracked_event():
    record = _from_tag(
        _event(type="purchase", value="49.5", order_id="o-1", properties={"coupon": "é"})
    )

    parsed = record_parse(json.dumps(record, ensure_ascii=False).encode())

    assert parsed == {
        **record,
        "occurred_at": datetime(2026, 11, 1, 11, 59, 57, 500000, tzinfo=UTC),
        "received_at": RECEIVED_AT,
        "value": Decimal("49.50"),
    }


def _delivery_kwargs():
    return {
        "client_id": 3,
        "visitor_id": VISITOR_ID,
        "session_id": "",
        "placement_key": "hero",
        "campaign_key": "spring",
        "content_id": None,
        "table_version": None,
        "url": "",
        "referrer": "",
        "at": RECEIVED_AT,
    }


def test_delivery_record_cuts_long_urls_and_gets_a_fresh_event_id():
    long_url = "https://shop.example/" + "a" * 2500

    first = delivery_record(**{**_delivery_kwargs(), "url": long_url, "referrer": long_url})
    second = delivery_record(**_delivery_kwargs())

    assert first["url"] == long_url[:2000]
    assert first["referrer"] == long_url[:2000]
    assert first["event_id"] != second["event_id"]
    assert record_parse(_line(first))["url"] == long_url[:2000]


def test_record_parse_reads_naive_timestamps_as_utc():
    record = {**_delivery(), "occurred_at": "2026-11-01T09:30:00", "received_at": "2026-11-01"}

    parsed = record_parse(_line(record))

    assert parsed["occurred_at"] == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert parsed["received_at"] == datetime(2026, 11, 1, tzinfo=UTC)


def test_record_parse_keeps_the_offset_of_aware_timestamps():
    record = {**_delivery(), "occurred_at": "2026-11-01T14:00:00+02:00"}

    assert record_parse(_line(record))["occurred_at"] == RECEIVED_AT


def _without(name):
    record = _delivery()
    del record[name]
    return _line(record)


def _with(**fields):
    return _line({**_delivery(), **fields})


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"", "not JSON"),
        (b"{not json}\n", "not JSON"),
        (b'{"event_id": "\xff"}', "not JSON"),
        (_line(_delivery())[:-10], "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'"delivery"', "not an object"),
        (b"null", "not an object"),
        (_without("event_id"), "missing field event_id"),
        (_without("client"), "missing field client"),
        (_without("received_at"), "missing field received_at"),
        (_without("email"), "missing field email"),
        (_without("properties"), "missing field properties"),
        (_with(event_id="nope"), "bad field: badly formed hexadecimal UUID string"),
        (_with(type="refund"), "unknown type 'refund'"),
        (_with(client="3"), "client must be an integer"),
        (_with(client=True), "client must be an integer"),
        (_with(occurred_at="yesterday"), "bad field: Invalid isoformat string: 'yesterday'"),
        (
            _with(received_at=1793534400),
            "bad field: fromisoformat: argument must be str",
        ),
        (_with(url="u" * 2001), "url must be a string of at most 2000 characters"),
        (_with(currency=None), "currency must be a string of at most 3 characters"),
        (_with(visitor_id=""), "visitor_id is empty"),
        (
            _with(content_id="12"),
            "content_id must be null or an integer from 0 to 9223372036854775807",
        ),
        (
            _with(content_id=2**63),
            "content_id must be null or an integer from 0 to 9223372036854775807",
        ),
        (_with(table_version=4.5), "table_version must be null or an integer from 0 to 2147483647"),
        (_with(table_version=-1), "table_version must be null or an integer from 0 to 2147483647"),
        (_with(value="1e13"), "value must be a number of at most 999999999999.99"),
        (_with(value="ten"), "bad field: [<class 'decimal.ConversionSyntax'>]"),
        (_with(properties=[]), "properties must be an object"),
    ],
)
def test_record_parse_refuses_a_bad_line_with_exact_error(line, error):
    with pytest.raises(RecordError) as raised:
        record_parse(line)

    assert str(raised.value) == error


@pytest.mark.parametrize("event_id", [5, ["0f8fad5b-d9cb-469f-a165-70867728950e"]])
def test_record_parse_refuses_an_event_id_that_is_not_a_string(event_id):
    with pytest.raises(RecordError):
        record_parse(_with(event_id=event_id))


def test_event_ids_made_here_are_unique_version_4_uuids_also_across_forked_workers():
    ids = [event_id_new() for _ in range(10_000)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a forked web worker
        os.write(write, event_id_new().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()

    assert len({*ids, child, event_id_new()}) == 10_002
    assert {(uuid.UUID(i).version, uuid.UUID(i).variant) for i in ids} == {(4, uuid.RFC_4122)}
    assert [str(uuid.UUID(i)) for i in ids[:100]] == ids[:100]


def test_a_delivery_record_is_the_record_record_new_makes():
    at = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    given = {"client_id": 3, "visitor_id": "v1", "session_id": "s1", "at": at}
    fields = {"placement_key": "hero", "campaign_key": "spring", "content_id": 7,
              "table_version": 2, "url": "u" * 2500, "referrer": "https://r.example/"}  # fmt: skip

    made = delivery_record(**given, **fields)
    expected = record_new(
        client_id=3, kind="delivery", visitor_id="v1", occurred_at=at, session_id="s1",
        **{**fields, "url": "u" * 2000},
    )  # fmt: skip

    assert list(made) == list(expected)
    assert {**made, "event_id": "-"} == {**expected, "event_id": "-"}
    assert uuid.UUID(made["event_id"]).version == 4


@pytest.mark.parametrize("name", sorted(TEXT_LIMITS))
def test_the_fast_reading_bounds_each_text_as_record_parse_does(name):
    limit = TEXT_LIMITS[name]
    at_limit = _with(**{name: "x" * limit})
    beyond = _with(**{name: "x" * (limit + 1)})

    assert getattr(spool_line_decode(at_limit), name) == "x" * limit
    assert record_parse(at_limit)[name] == "x" * limit
    assert spool_line_decode(beyond) is None  # the careful reading then refuses it
    with pytest.raises(RecordError):
        record_parse(beyond)
