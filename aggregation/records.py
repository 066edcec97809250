"""The record schema: what the tag may send, and what a spool line must hold to be loaded.

Pure functions, no ORM. The collect batch (docs/aggregation.md):
    {"visitor": VID, "session": SID, "sent_at": MS, "events": [EVENT, ...]}
    EVENT = {"id": UUID, "type": TYPE, "at": MS, "url": str, "referrer": str,
             "product_id": str, "order_id": str, "value": number, "currency": "USD",
             "email": str, "properties": {str: scalar}}
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any

import msgspec
import orjson
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

TRACKED_TYPES = (
    "page_view",
    "product_view",
    "category_view",
    "search",
    "cart_add",
    "cart_remove",
    "checkout",
    "purchase",
    "custom",
)
# Recorded by the server: delivery answers (D4), clicks through our redirect (D1), and the opens
# and clicks of email messages (C2), which consolidation loads as email activity, not events.
EMAIL_TYPES = ("email_open", "email_click")
RECORD_TYPES = ("delivery", "click", *EMAIL_TYPES, *TRACKED_TYPES)
TEXT_LIMITS = {
    "url": 2000,
    "referrer": 2000,
    "product_id": 100,
    "category": 100,
    "order_id": 100,
    "email": 254,
    "campaign_key": 60,
    "placement_key": 60,
    "session_id": 64,
    "visitor_id": 64,
    "currency": 3,
}
MAX_PROPERTIES_BYTES = 2048
MAX_VALUE = Decimal("999999999999.99")
CENT = Decimal("0.01")
# What the events table's integer columns hold (bigint; a non-negative integer).
MAX_CONTENT_ID = 2**63 - 1
MAX_TABLE_VERSION = 2**31 - 1
# Events stamped further than this from the server's clock (after skew correction) are refused.
MAX_EVENT_AGE = timedelta(days=7)


class RecordError(ValueError):
    pass


def _text(event: dict, name: str, limit: int) -> str:
    value = event.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"{name} must be a string")
    if len(value) > limit:
        raise RecordError(f"{name} is longer than {limit} characters")
    if not _is_storable(value):
        raise RecordError(f"{name} holds characters that cannot be stored")
    return value


def _is_storable(text: str) -> bool:
    """False for NUL (PostgreSQL refuses it) and lone surrogates (not encodable as UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _value(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise RecordError("value must be a number")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise RecordError("value must be a number") from None
    if not value.is_finite() or not 0 <= value <= MAX_VALUE:
        raise RecordError(f"value must be between 0 and {MAX_VALUE}")
    return str(value.quantize(CENT))


def _properties(raw: Any) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecordError("properties must be an object")
    for key, item in raw.items():
        if not isinstance(item, (str, int, float, bool)) and item is not None:
            raise RecordError(f"properties.{key} must be a string, number or boolean")
        if isinstance(item, float) and not math.isfinite(item):
            raise RecordError(f"properties.{key} must be a finite number")
        if not _is_storable(key) or (isinstance(item, str) and not _is_storable(item)):
            raise RecordError(f"properties.{key} holds characters that cannot be stored")
    if len(json.dumps(raw)) > MAX_PROPERTIES_BYTES:
        raise RecordError(f"properties are larger than {MAX_PROPERTIES_BYTES} bytes")
    return raw


MAX_ITEMS = 50


def _items(raw: Any) -> list[dict]:
    """The lines of an order: product id, quantity and unit price of each."""
    if not isinstance(raw, list) or len(raw) > MAX_ITEMS:
        raise RecordError(f"items must be a list of at most {MAX_ITEMS} items")
    items = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RecordError(f"items[{index}] must be an object")
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 < quantity <= 10000:
            raise RecordError(f"items[{index}].quantity must be a whole number from 1 to 10000")
        try:
            product_id = _text(item, "product_id", TEXT_LIMITS["product_id"])
        except RecordError as error:
            raise RecordError(f"items[{index}].{error}") from None
        try:
            price = _value(item.get("price", 0))
        except RecordError:
            raise RecordError(f"items[{index}].price must be between 0 and {MAX_VALUE}") from None
        items.append({"product_id": product_id, "quantity": quantity, "price": price})
    return items


def timestamp_ms(raw: Any, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise RecordError(f"{name} must be milliseconds since the epoch")
    # JSON integers have no size limit; beyond 2**53 they are no longer milliseconds anyway.
    if abs(raw) > 2**53 or not math.isfinite(raw):
        raise RecordError(f"{name} must be milliseconds since the epoch")
    return float(raw)


# Every field of a spool record, with its value when a source has nothing to say about it.
RECORD_DEFAULTS: dict[str, Any] = {
    "session_id": "",
    "url": "",
    "referrer": "",
    "campaign_key": "",
    "placement_key": "",
    "content_id": None,
    "table_version": None,
    "product_id": "",
    "category": "",
    "order_id": "",
    "value": None,
    "currency": "",
    "email": "",
    "properties": {},
}


class _EventIds:
    """Version 4 UUIDs for records made here: 72 random bits per process (drawn again in every
    forked worker) and a 48-bit counter from a random start. Only uniqueness is asked of an
    event id, and the delivery path makes one per answer: this costs a quarter of uuid4's
    0.8 us (two processes share a prefix with probability 2**-72)."""

    def __init__(self) -> None:
        self.draw()

    def draw(self) -> None:
        bits = secrets.token_hex(10)
        variant = "89ab"[int(bits[15], 16) & 3]
        self.prefix = f"{bits[:8]}-{bits[8:12]}-4{bits[12:15]}-{variant}{bits[16:19]}-"
        self.counter = itertools.count(secrets.randbits(47))


_ids = _EventIds()
os.register_at_fork(after_in_child=_ids.draw)


def event_id_new() -> str:
    """A unique version 4 UUID for a record made here."""
    return f"{_ids.prefix}{next(_ids.counter) & 0xFFFFFFFFFFFF:012x}"


def record_new(
    *,
    client_id: int,
    kind: str,
    visitor_id: str,
    occurred_at: datetime,
    received_at: datetime | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> dict:
    """A spool record (the schema record_parse checks); fields not given take their defaults."""
    unknown = set(fields) - set(RECORD_DEFAULTS)
    if unknown:
        raise TypeError(f"not record fields: {', '.join(sorted(unknown))}")
    return {
        "event_id": event_id or event_id_new(),
        "client": client_id,
        "type": kind,
        "visitor_id": visitor_id,
        "occurred_at": occurred_at.isoformat(),
        "received_at": (received_at or occurred_at).isoformat(),
        **RECORD_DEFAULTS,
        "properties": {},
        **fields,
    }


def event_from_tag(
    event: Any,
    *,
    client_id: int,
    visitor_id: str,
    session_id: str,
    sent_at_ms: float,
    received_at: datetime,
) -> dict:
    """One tracked event as a spool record; raises RecordError naming what is wrong."""
    if not isinstance(event, dict):
        raise RecordError("must be an object")
    try:
        event_id = str(uuid.UUID(str(event.get("id", ""))))
    except ValueError:
        raise RecordError("id must be a UUID") from None
    kind = event.get("type")
    if kind not in TRACKED_TYPES:
        raise RecordError(f"type must be one of {', '.join(TRACKED_TYPES)}")
    at_ms = timestamp_ms(event.get("at"), "at")
    # The tag's clock may be wrong; the gap between the event and the send is not.
    gap_ms = max(0.0, sent_at_ms - at_ms)
    if gap_ms > MAX_EVENT_AGE.total_seconds() * 1000:
        raise RecordError("at is more than 7 days before sent_at")
    occurred_at = received_at - timedelta(milliseconds=gap_ms)
    email = _text(event, "email", TEXT_LIMITS["email"]).strip()
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise RecordError("email is not a valid address") from None
    currency = _text(event, "currency", 3).upper()
    if currency and not (len(currency) == 3 and currency.isalpha()):
        raise RecordError("currency must be a three-letter code")
    value = _value(event.get("value"))
    if kind == "purchase" and value is None:
        raise RecordError("a purchase needs a value")
    properties = _properties(event.get("properties"))
    if kind == "search":
        query = _text(event, "query", 200)
        if not query:
            raise RecordError("a search needs a query")
        properties = {**properties, "query": query}
    if event.get("items") is not None:
        properties = {**properties, "items": _items(event["items"])}
    return record_new(
        event_id=event_id,
        client_id=client_id,
        kind=kind,
        visitor_id=visitor_id,
        session_id=session_id,
        occurred_at=occurred_at,
        received_at=received_at,
        url=_text(event, "url", TEXT_LIMITS["url"]),
        referrer=_text(event, "referrer", TEXT_LIMITS["referrer"]),
        product_id=_text(event, "product_id", TEXT_LIMITS["product_id"]),
        category=_text(event, "category", TEXT_LIMITS["category"]),
        order_id=_text(event, "order_id", TEXT_LIMITS["order_id"]),
        value=value,
        currency=currency,
        email=email,
        properties=properties,
    )


def delivery_record(
    *,
    client_id: int,
    visitor_id: str,
    session_id: str,
    placement_key: str,
    campaign_key: str,
    content_id: int | None,
    table_version: int | None,
    url: str,
    referrer: str,
    at: datetime,
) -> dict:
    """The spool record of one delivery answer (D4): record_new's record, built in one
    literal because every answer of the hot path makes one."""
    moment = at.isoformat()
    # Every field in one literal, in RECORD_DEFAULTS' order (a test holds the two together).
    return {
        "event_id": event_id_new(),
        "client": client_id,
        "type": "delivery",
        "visitor_id": visitor_id,
        "occurred_at": moment,
        "received_at": moment,
        "session_id": session_id,
        "url": url[: TEXT_LIMITS["url"]],
        "referrer": referrer[: TEXT_LIMITS["referrer"]],
        "campaign_key": campaign_key,
        "placement_key": placement_key,
        "content_id": content_id,
        "table_version": table_version,
        "product_id": "",
        "category": "",
        "order_id": "",
        "value": None,
        "currency": "",
        "email": "",
        "properties": {},
    }


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# NUL (refused by PostgreSQL) and lone surrogates (not UTF-8), as JSON escapes them.
UNSTORABLE_RE = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]")


def record_parse(line: bytes) -> dict:
    """A spool line checked field by field before loading; raises RecordError.

    The loader's inner loop: about 5 us a line (orjson, one regex over the raw line instead
    of a check per field).
    """
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise RecordError("not JSON") from None
    if not isinstance(record, dict):
        raise RecordError("not an object")
    if UNSTORABLE_RE.search(line):
        raise RecordError("holds characters that cannot be stored")
    try:
        event_id = record["event_id"]
        if not isinstance(event_id, str):
            raise RecordError("event_id must be a string")
        if not UUID_RE.fullmatch(event_id):
            record["event_id"] = str(uuid.UUID(event_id))
        if record["type"] not in RECORD_TYPES:
            raise RecordError(f"unknown type {record['type']!r}")
        if type(record["client"]) is not int:
            raise RecordError("client must be an integer")
        for name in ("occurred_at", "received_at"):
            moment = datetime.fromisoformat(record[name])
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            try:
                record[name] = moment.astimezone(UTC)
            except OverflowError:
                raise RecordError(f"{name} is out of range in UTC") from None
        for name, limit in TEXT_LIMITS.items():
            text = record[name]
            if type(text) is not str or len(text) > limit:
                raise RecordError(f"{name} must be a string of at most {limit} characters")
        if not record["visitor_id"]:
            raise RecordError("visitor_id is empty")
        for name, largest in (("content_id", MAX_CONTENT_ID), ("table_version", MAX_TABLE_VERSION)):
            number = record[name]
            if number is not None and (type(number) is not int or not 0 <= number <= largest):
                raise RecordError(f"{name} must be null or an integer from 0 to {largest}")
        value = record["value"]
        if value is not None:
            record["value"] = Decimal(value)
            if not record["value"].is_finite() or abs(record["value"]) > MAX_VALUE:
                raise RecordError(f"value must be a number of at most {MAX_VALUE}")
        if type(record["properties"]) is not dict:
            raise RecordError("properties must be an object")
    except KeyError as error:
        raise RecordError(f"missing field {error.args[0]}") from None
    except (TypeError, ValueError, InvalidOperation) as error:
        if isinstance(error, RecordError):
            raise
        raise RecordError(f"bad field: {error}") from None
    return record


# Texts bounded as TEXT_LIMITS bounds them (msgspec checks the length while it decodes; a
# test holds the two together).
_Text64 = Annotated[str, msgspec.Meta(max_length=64)]
_Text2000 = Annotated[str, msgspec.Meta(max_length=2000)]
_Text100 = Annotated[str, msgspec.Meta(max_length=100)]
_Text60 = Annotated[str, msgspec.Meta(max_length=60)]
_Moment = Annotated[str, msgspec.Meta(max_length=32)]


class SpoolLine(msgspec.Struct, gc=False):
    """A spool record as the loader takes it: record_new's fields, the times in UTC ISO 8601
    (as the writers make them: string order is time order), the value as decimal text.

    spool_line_decode makes one straight from a line in one pass of C (msgspec checks types and
    lengths: about 1 us, against 5 us for record_parse); spool_line_of from record_parse's
    record, for the lines that take the careful path.
    """

    event_id: str
    client: int
    type: str
    visitor_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    session_id: _Text64
    occurred_at: _Moment
    received_at: _Moment
    url: _Text2000
    referrer: _Text2000
    campaign_key: _Text60
    placement_key: _Text60
    content_id: Annotated[int, msgspec.Meta(ge=0, le=MAX_CONTENT_ID)] | None
    table_version: Annotated[int, msgspec.Meta(ge=0, le=MAX_TABLE_VERSION)] | None
    product_id: _Text100
    category: _Text100
    order_id: _Text100
    value: Annotated[str, msgspec.Meta(max_length=16)] | None
    currency: Annotated[str, msgspec.Meta(max_length=3)]
    email: Annotated[str, msgspec.Meta(max_length=254)]
    properties: dict[str, Any]


_line_decoder = msgspec.json.Decoder(SpoolLine)
_RECORD_TYPE_SET = frozenset(RECORD_TYPES)
_VALUE_RE = re.compile(r"\d{1,12}\.\d\d")


# A UTC time as datetime.isoformat writes it (profiles.utc_text): microseconds only when there
# are some, so one time has one text, and texts sort as their times do. The date is checked
# by PostgreSQL (a 30th of February fails the COPY, and the slice is read the careful way).
_UTC_TEXT_RE = re.compile(
    r"(?!0000)[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.(?!000000)[0-9]{6})?\+00:00"
)
_is_utc_text = _UTC_TEXT_RE.fullmatch


def spool_line_decode(line: bytes) -> SpoolLine | None:
    """The line as our writers make it, or None when it needs record_parse's careful reading.

    Taken here only when nothing in it needs an escape (no backslash: so no tab, newline, NUL
    or lone surrogate in any string, and every string goes to COPY as it is) and its event id,
    times and value are in the writers' own forms. What msgspec cannot see (a date that does
    not exist, a non-hex id) PostgreSQL's COPY refuses, and the loader reads that slice again
    the careful way.
    """
    if b"\\" in line:
        return None
    try:
        record = _line_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    event_id = record.event_id
    if not (
        len(event_id) == 36
        and event_id[8] == event_id[13] == event_id[18] == event_id[23] == "-"
        and event_id.islower()
        and record.type in _RECORD_TYPE_SET
        and _is_utc_text(record.occurred_at)
        and _is_utc_text(record.received_at)
        and (record.value is None or _VALUE_RE.fullmatch(record.value))
    ):
        return None
    return record


def spool_line_of(record: dict) -> SpoolLine:
    """record_parse's record (its times in UTC) as a SpoolLine, the value rounded as
    PostgreSQL's numeric(14, 2) rounds it."""
    value = record["value"]
    return SpoolLine(
        event_id=record["event_id"],
        client=record["client"],
        type=record["type"],
        visitor_id=record["visitor_id"],
        session_id=record["session_id"],
        occurred_at=record["occurred_at"].isoformat(),
        received_at=record["received_at"].isoformat(),
        url=record["url"],
        referrer=record["referrer"],
        campaign_key=record["campaign_key"],
        placement_key=record["placement_key"],
        content_id=record["content_id"],
        table_version=record["table_version"],
        product_id=record["product_id"],
        category=record["category"],
        order_id=record["order_id"],
        value=None if value is None else str(value.quantize(CENT, rounding=ROUND_HALF_UP)),
        currency=record["currency"],
        email=record["email"],
        properties=record["properties"],
    )
