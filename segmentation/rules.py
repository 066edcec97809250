"""The segment rule language: parsed, validated, compiled to a Q and evaluated in memory.

A rule is JSON data (docs/segments.md):
    rule      := {"all": [rule, ...]} | {"any": [rule, ...]} | {"not": rule}
                 | condition | behaviour
    condition := {"field": FIELD, "op": OPERATOR, "value": VALUE}          (over the profile)
    behaviour := {"event": EVENT, "count": {"op": OPERATOR, "value": N},   (over the events)
                  ["within_days": N | "between": [DATE, DATE]],
                  ["category": TEXT], ["product_id": TEXT]}

Only the fields, events and operators named here reach a query: the request names them by key,
and the key selects our own lookup or SQL text; values only ever travel as query parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

MAX_DEPTH = 8
MAX_CONDITIONS = 50

NUMBER_OPERATORS = {
    "eq": "exact",
    "ne": "exact",
    "gt": "gt",
    "gte": "gte",
    "lt": "lt",
    "lte": "lte",
}
SOURCES = ["direct", "referral", "search", "campaign", "email"]


class RuleError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Field:
    label: str
    kind: str  # "int", "money", "bool" or "choice"
    column: str
    choices: tuple[str, ...] = ()

    @property
    def operators(self) -> tuple[str, ...]:
        if self.kind == "bool":
            return ("is",)
        if self.kind == "choice":
            return ("eq", "ne", "in")
        return tuple(NUMBER_OPERATORS)


FIELDS: dict[str, Field] = {
    "purchases": Field("Number of purchases", "int", "purchases"),
    "total_spent": Field("Total spent", "money", "total_spent"),
    "average_order_value": Field("Average order value", "money", "average_order_value"),
    "products_viewed": Field("Distinct products viewed", "int", "products_viewed"),
    "visits": Field("Number of visits", "int", "visits"),
    "page_views": Field("Page views", "int", "page_views"),
    "product_views": Field("Product views", "int", "product_views"),
    "cart_adds": Field("Cart adds", "int", "cart_adds"),
    "cart_removes": Field("Cart removes", "int", "cart_removes"),
    "cart_abandonments": Field("Abandoned carts", "int", "cart_abandonments"),
    "first_time": Field("First-time visitor", "bool", "visits"),
    "has_email": Field("Email address known", "bool", "email"),
    "source": Field("How they came", "choice", "source", tuple(SOURCES)),
}


# Behaviours: what visitors did, counted over their events (joined visitors' events included).
BEHAVIOURS: dict[str, str] = {
    "page_view": "Viewed a page",
    "product_view": "Viewed a product",
    "category_view": "Viewed a category",
    "search": "Searched",
    "cart_add": "Added to cart",
    "cart_remove": "Removed from cart",
    "checkout": "Started checkout",
    "purchase": "Purchased (orders)",
    "cart_abandonment": "Abandoned a cart (sessions)",
}
# Filters a behaviour may add: only events of this category or product count.
BEHAVIOUR_FILTERS = ("category", "product_id")
COUNT_SQL = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_WINDOW_DAYS = 3650
EARLIEST_DAY, LATEST_DAY = date(2000, 1, 1), date(2099, 12, 31)
MAX_COUNT = 1_000_000


class EventLike(Protocol):
    """What the in-memory evaluator reads of an event (aggregation.profiles.EventRow)."""

    type: str
    session_id: str
    occurred_at: datetime
    order_id: str
    product_id: str
    category: str
    event_id: str


def rule_validate(rule: Any) -> dict:
    """Return the rule normalised (values typed) or raise RuleError with every problem found."""
    errors: list[str] = []
    count = [0]
    normalised = _validate(rule, "rule", 0, errors, count)
    if count[0] > MAX_CONDITIONS:
        errors.append(f"rule: at most {MAX_CONDITIONS} conditions, found {count[0]}")
    if errors:
        raise RuleError(errors)
    return normalised


def _validate(node: Any, path: str, depth: int, errors: list[str], count: list[int]) -> Any:
    if depth > MAX_DEPTH:
        errors.append(f"{path}: nested deeper than {MAX_DEPTH} levels")
        return None
    if not isinstance(node, dict):
        errors.append(f"{path}: must be an object")
        return None
    keys = set(node)
    for group in ("all", "any"):
        if keys == {group}:
            children = node[group]
            if not isinstance(children, list) or not children:
                errors.append(f"{path}.{group}: must be a non-empty list")
                return None
            return {
                group: [
                    _validate(child, f"{path}.{group}[{i}]", depth + 1, errors, count)
                    for i, child in enumerate(children)
                ]
            }
    if keys == {"not"}:
        return {"not": _validate(node["not"], f"{path}.not", depth + 1, errors, count)}
    if keys == {"field", "op", "value"}:
        count[0] += 1
        return _validate_condition(node, path, errors)
    if "event" in keys:
        count[0] += 1
        return _validate_behaviour(node, path, errors)
    errors.append(
        f"{path}: expected all, any, not, field/op/value or event/count, got {sorted(keys)}"
    )
    return None


def _validate_behaviour(node: dict, path: str, errors: list[str]) -> dict | None:
    found = len(errors)
    allowed = {"event", "count", "within_days", "between", *BEHAVIOUR_FILTERS}
    unknown = set(node) - allowed
    if unknown:
        errors.append(f"{path}: unknown keys {sorted(unknown)}")
    event = node.get("event")
    if not isinstance(event, str) or event not in BEHAVIOURS:
        errors.append(f"{path}.event: unknown event {event!r}")
    result: dict[str, Any] = {"event": event}
    count = node.get("count")
    if not isinstance(count, dict) or set(count) != {"op", "value"}:
        errors.append(f'{path}.count: must be {{"op": ..., "value": ...}}')
    elif not isinstance(count["op"], str) or count["op"] not in COUNT_SQL:
        errors.append(f"{path}.count.op: {count['op']!r} is not one of {', '.join(COUNT_SQL)}")
    elif (
        isinstance(count["value"], bool)
        or not isinstance(count["value"], int)
        or not 0 <= count["value"] <= MAX_COUNT
    ):
        errors.append(f"{path}.count.value: must be a whole number from 0 to {MAX_COUNT}")
    else:
        result["count"] = {"op": count["op"], "value": count["value"]}
    if "within_days" in node and "between" in node:
        errors.append(f"{path}: within_days or between, not both")
    elif "within_days" in node:
        days = node["within_days"]
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_WINDOW_DAYS:
            errors.append(f"{path}.within_days: must be a whole number from 1 to {MAX_WINDOW_DAYS}")
        else:
            result["within_days"] = days
    elif "between" in node:
        try:
            first, last = (date.fromisoformat(day) for day in node["between"])
        except (TypeError, ValueError):
            errors.append(f"{path}.between: must be two dates, YYYY-MM-DD")
        else:
            if first > last:
                errors.append(f"{path}.between: the first date is after the second")
            elif not EARLIEST_DAY <= first <= last <= LATEST_DAY:
                errors.append(f"{path}.between: dates from {EARLIEST_DAY} to {LATEST_DAY} only")
            result["between"] = [first.isoformat(), last.isoformat()]
    for name in BEHAVIOUR_FILTERS:
        if name not in node:
            continue
        if event == "cart_abandonment":
            errors.append(f"{path}.{name}: abandoned carts are counted by session, unfiltered")
        elif not isinstance(node[name], str) or not 0 < len(node[name]) <= 100:
            errors.append(f"{path}.{name}: must be text of 1 to 100 characters")
        else:
            result[name] = node[name]
    return result if len(errors) == found else None


def _validate_condition(node: dict, path: str, errors: list[str]) -> dict | None:
    field = FIELDS.get(node["field"]) if isinstance(node["field"], str) else None
    if field is None:
        errors.append(f"{path}.field: unknown field {node['field']!r}")
        return None
    op = node["op"]
    if op not in field.operators:
        errors.append(f"{path}.op: {op!r} is not an operator of {node['field']}")
        return None
    value = node["value"]
    try:
        typed = _typed_value(field, op, value)
    except ValueError as error:
        errors.append(f"{path}.value: {error}")
        return None
    return {"field": node["field"], "op": op, "value": typed}


def _typed_value(field: Field, op: str, value: Any) -> Any:
    if field.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if field.kind == "choice":
        values = value if op == "in" else [value]
        if not isinstance(values, list) or not values:
            raise ValueError("must be a non-empty list")
        for item in values:
            if item not in field.choices:
                raise ValueError(f"{item!r} is not one of {', '.join(field.choices)}")
        return values if op == "in" else value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("must be a number")
    if field.kind == "int":
        if isinstance(value, float) or (isinstance(value, str) and not value.lstrip("-").isdigit()):
            raise ValueError("must be a whole number")
        return int(value)
    try:
        money = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a number") from None
    if not money.is_finite():
        raise ValueError("must be a finite number")
    return str(money)


def rule_compile(rule: dict, *, client_id: int, now: datetime, idle: timedelta) -> Q:
    """A validated rule as a Q over the client's Profiles: one query, behaviours included.

    `now` anchors the relative windows; `idle` is how long a session lasts without events
    (an abandoned cart's session must have ended).
    """
    if "all" in rule:
        result = Q()
        for child in rule["all"]:
            result &= rule_compile(child, client_id=client_id, now=now, idle=idle)
        return result
    if "any" in rule:
        result = Q(pk__in=[])
        for child in rule["any"]:
            result |= rule_compile(child, client_id=client_id, now=now, idle=idle)
        return result
    if "not" in rule:
        return ~rule_compile(rule["not"], client_id=client_id, now=now, idle=idle)
    if "event" in rule:
        return _behaviour_compile(rule, client_id=client_id, now=now, idle=idle)
    field = FIELDS[rule["field"]]
    op, value = rule["op"], rule["value"]
    if rule["field"] == "first_time":
        return Q(visits__lte=1) if value else Q(visits__gt=1)
    if rule["field"] == "has_email":
        return ~Q(email="") if value else Q(email="")
    if op == "in":
        return Q(**{f"{field.column}__in": value})
    condition = Q(**{f"{field.column}__{NUMBER_OPERATORS.get(op, 'exact')}": value})
    return ~condition if op == "ne" else condition


# The visitor an event counts for: the canonical one of a joined visitor (B5), else its own.
_EVENTS_FROM = """
FROM aggregation_event AS event
LEFT JOIN aggregation_visitorlink AS link
    ON link.client_id = event.client_id AND link.visitor_id = event.visitor_id
WHERE event.client_id = %s
"""
# Counted per visitor: orders (an order id counts once, as in profiles), sessions (abandoned
# carts) or events.
_SESSION_KEY = (
    "CASE WHEN event.session_id = '' THEN '#' || event.event_id ELSE event.session_id END"
)
_ORDER_KEY = "CASE WHEN event.order_id = '' THEN '#' || event.event_id ELSE event.order_id END"


def _window(rule: dict, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The behaviour's window as [start, end): the last N days up to now, or whole dates."""
    if "within_days" in rule:
        return now - timedelta(days=rule["within_days"]), None
    if "between" in rule:
        first, last = (date.fromisoformat(day) for day in rule["between"])
        zone = now.tzinfo
        return (
            datetime.combine(first, time(), tzinfo=zone),
            datetime.combine(last + timedelta(days=1), time(), tzinfo=zone),
        )
    return None, None


def _behaviour_compile(rule: dict, *, client_id: int, now: datetime, idle: timedelta) -> Q:
    """Visitors whose count of the behaviour satisfies the condition, as a subquery of the
    visitors that have at least one such event. When a count of zero satisfies it too ("no
    purchase in 30 days"), the condition is written as "not among the visitors whose count
    fails it", so that visitors without any such event are in."""
    filters: list[str] = []
    params: list[Any] = []
    start, end = _window(rule, now)
    adapt = connection.ops.adapt_datetimefield_value
    if start is not None:
        filters.append("event.occurred_at >= %s")
        params.append(adapt(start))
    if end is not None:
        filters.append("event.occurred_at < %s")
        params.append(adapt(end))
    for name in BEHAVIOUR_FILTERS:
        if name in rule:
            filters.append(f"event.{name} = %s")
            params.append(rule[name])
    where = "".join(f" AND {condition}" for condition in filters)
    canonical = "coalesce(link.canonical_id, event.visitor_id)"
    op, value = rule["count"]["op"], rule["count"]["value"]
    includes_zero = _compare(0, op, value)
    having = f"{'NOT ' if includes_zero else ''}({{count}} {COUNT_SQL[op]} %s)"
    if rule["event"] == "cart_abandonment":
        # Sessions are whole (all their events), counted when they ended inside the window.
        ended = "".join(
            f" AND max(event.occurred_at) {sign} %s"
            for sign, moment in ((">=", start), ("<", end))
            if moment is not None
        )
        sql = (
            f"SELECT visitor FROM (SELECT {canonical} AS visitor {_EVENTS_FROM}"
            f"GROUP BY {canonical}, {_SESSION_KEY} "
            "HAVING max(CASE WHEN event.type = 'cart_add' THEN 1 ELSE 0 END) = 1 "
            "AND max(CASE WHEN event.type = 'purchase' THEN 1 ELSE 0 END) = 0 "
            f"AND max(event.occurred_at) < %s{ended}) AS abandoned "
            f"GROUP BY visitor HAVING {having.format(count='count(*)')}"
        )
        # The window's parameters (filters are refused for abandoned carts) close the HAVING.
        params = [client_id, adapt(now - idle), *params, value]
    else:
        counted = f"count(DISTINCT {_ORDER_KEY})" if rule["event"] == "purchase" else "count(*)"
        sql = (
            f"SELECT {canonical} {_EVENTS_FROM} AND event.type = %s{where} "
            f"GROUP BY {canonical} HAVING {having.format(count=counted)}"
        )
        params = [client_id, rule["event"], *params, value]
    matching = Q(visitor_id__in=RawSQL(sql, params))
    return ~matching if includes_zero else matching


def _compare(actual: Any, op: str, value: Any) -> bool:
    return {
        "eq": actual == value,
        "ne": actual != value,
        "gt": actual > value,
        "gte": actual >= value,
        "lt": actual < value,
        "lte": actual <= value,
    }[op]


def behaviour_count(
    rule: dict, events: Sequence[EventLike], *, now: datetime, idle: timedelta
) -> int:
    """How many times the behaviour happened in these events (one visitor's, joined ones
    included): the in-memory twin of _behaviour_compile's count."""
    start, end = _window(rule, now)

    def is_inside(moment: datetime) -> bool:
        return (start is None or moment >= start) and (end is None or moment < end)

    if rule["event"] == "cart_abandonment":
        sessions: dict[str, list] = {}
        for event in events:
            sessions.setdefault(event.session_id or f"#{event.event_id}", []).append(event)
        return sum(
            1
            for session in sessions.values()
            if any(event.type == "cart_add" for event in session)
            and not any(event.type == "purchase" for event in session)
            and max(event.occurred_at for event in session) < now - idle
            and is_inside(max(event.occurred_at for event in session))
        )
    chosen = [
        event
        for event in events
        if is_inside(event.occurred_at)
        and all(getattr(event, name) == rule[name] for name in BEHAVIOUR_FILTERS if name in rule)
    ]
    chosen = [event for event in chosen if event.type == rule["event"]]
    if rule["event"] == "purchase":
        return len({event.order_id or f"#{event.event_id}" for event in chosen})
    return len(chosen)


def rule_matches(
    rule: dict,
    profile: dict[str, Any],
    *,
    events: Sequence[EventLike] = (),
    now: datetime,
    idle: timedelta,
) -> bool:
    """Evaluate a validated rule against one profile's values and its visitor's events (those
    of joined visitors included), as rule_compile would."""
    if "all" in rule:
        return all(
            rule_matches(child, profile, events=events, now=now, idle=idle) for child in rule["all"]
        )
    if "any" in rule:
        return any(
            rule_matches(child, profile, events=events, now=now, idle=idle) for child in rule["any"]
        )
    if "not" in rule:
        return not rule_matches(rule["not"], profile, events=events, now=now, idle=idle)
    if "event" in rule:
        count = behaviour_count(rule, events, now=now, idle=idle)
        return _compare(count, rule["count"]["op"], rule["count"]["value"])
    name, op, value = rule["field"], rule["op"], rule["value"]
    if name == "first_time":
        return (profile["visits"] <= 1) == value
    if name == "has_email":
        return (profile["email"] != "") == value
    actual = profile[FIELDS[name].column]
    if op == "in":
        return actual in value
    if FIELDS[name].kind == "money":
        actual, value = Decimal(str(actual)), Decimal(value)
    return _compare(actual, op, value)
