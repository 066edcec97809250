"""Legacy customer records (A4) turned into spool records. Pure: no ORM, no files.

A mapping names, for each of our fields, the source column that holds it:
    {"customer_id": "Customer No", "email": "E-mail", "order_id": "Order",
     "order_date": "Date", "order_total": "Total", "currency": "Currency",
     "first_seen": "Customer since", "attributes": ["Tier", "City"],
     "date_format": "%d/%m/%Y"}            # optional; ISO 8601 dates otherwise
Each row gives a "customer_record" custom event (email and attributes) and, when it names an
order, a purchase. Event ids are derived from the client and the row's content, so importing
the same file again adds nothing; the visitor id from the client and the customer id (or the
email), so one customer's rows build one profile.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aggregation.records import RecordError, _is_storable, record_new

FIELDS = ("customer_id", "email", "order_id", "order_date", "order_total", "currency", "first_seen")
NAMESPACE = uuid.UUID("6f1d4a52-3f8c-4d35-9a37-c0a3f1e2b7d4")
# Cells a spreadsheet would run as a formula when the report is opened.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def mapping_validate(mapping: Any) -> dict:
    """The mapping checked; raises ValueError naming what is wrong."""
    if not isinstance(mapping, dict):
        raise ValueError("the mapping must be an object")
    unknown = set(mapping) - {*FIELDS, "attributes", "date_format"}
    if unknown:
        raise ValueError(f"unknown fields in the mapping: {', '.join(sorted(unknown))}")
    if not mapping.get("customer_id") and not mapping.get("email"):
        raise ValueError("the mapping needs a customer_id or an email column")
    if mapping.get("order_id") and not (mapping.get("order_date") and mapping.get("order_total")):
        raise ValueError("an order_id column needs order_date and order_total columns")
    attributes = mapping.get("attributes", [])
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise ValueError("attributes must be a list of column names")
    return mapping


def visitor_id_for(client_id: int, key: str) -> str:
    digest = hashlib.sha256(f"{client_id}:{key}".encode()).hexdigest()
    return f"import-{digest[:32]}"


def _date(text: str, date_format: str | None, name: str) -> datetime:
    try:
        moment = (
            datetime.strptime(text, date_format) if date_format else datetime.fromisoformat(text)
        )
    except ValueError:
        raise RecordError(f"{name} {text!r} is not a date") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def row_records(row: dict[str, str], *, mapping: dict, client_id: int, now: datetime) -> list[dict]:
    """The spool records of one row; raises RecordError naming the first problem."""

    def cell(field: str) -> str:
        column = mapping.get(field)
        value = (row.get(column) or "").strip() if column else ""
        if not _is_storable(value):
            raise RecordError(f"{field} holds characters that cannot be stored")
        return value

    customer_id, email = cell("customer_id"), cell("email").lower()
    if not customer_id and not email:
        raise RecordError("neither a customer id nor an email")
    if email and ("@" not in email or len(email) > 254):
        raise RecordError(f"email {email!r} is not an address")
    date_format = mapping.get("date_format")
    first_seen = cell("first_seen")
    seen_at = _date(first_seen, date_format, "first_seen") if first_seen else None
    visitor_id = visitor_id_for(client_id, customer_id or email)
    # Only the mapped columns make the id: an unmapped column that changes from one export to
    # the next (an export date) must not make the same customer a new record.
    mapped = [mapping.get(field) for field in FIELDS] + list(mapping.get("attributes", []))
    content = "\x1f".join(
        f"{column}={(row.get(column) or '').strip()}" for column in mapped if column
    )
    attributes = {
        name: (row.get(name) or "").strip()[:200] for name in mapping.get("attributes", [])
    }
    if customer_id:
        attributes["customer_id"] = customer_id[:200]
    records = []
    order_id = cell("order_id")
    if order_id:
        ordered_at = _date(cell("order_date"), date_format, "order_date")
        try:
            total = Decimal(cell("order_total").replace(",", "."))
        except InvalidOperation:
            raise RecordError(f"order_total {cell('order_total')!r} is not a number") from None
        if not total.is_finite() or not 0 <= total < Decimal("1e12"):
            raise RecordError("order_total must be between 0 and 999999999999.99")
        currency = cell("currency").upper()[:3]
        records.append(
            _record(
                client_id, visitor_id, f"order:{order_id}", "purchase", ordered_at, now,
                order_id=order_id[:100], value=str(total.quantize(Decimal("0.01"))),
                currency=currency, email=email,
            )
        )  # fmt: skip
        seen_at = min(seen_at, ordered_at) if seen_at else ordered_at
    records.append(
        _record(
            client_id, visitor_id, f"row:{content}", "custom", seen_at or now, now,
            email=email, properties={"name": "customer_record", **attributes},
        )
    )  # fmt: skip
    return records


def _record(client_id, visitor_id, key, kind, at, now, **fields) -> dict:
    return record_new(
        event_id=str(uuid.uuid5(NAMESPACE, f"{client_id}:{key}")),
        client_id=client_id,
        kind=kind,
        visitor_id=visitor_id,
        session_id="import",
        occurred_at=at,
        received_at=now,
        **fields,
    )


def cell_safe(value: object) -> str:
    """A report cell a spreadsheet shows as text, never runs as a formula."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text
