"""The segment rule language: parsed, validated, compiled to a Q and evaluated in memory.

A rule is JSON data:
    rule      := {"all": [rule, ...]} | {"any": [rule, ...]} | {"not": rule} | condition
    condition := {"field": FIELD, "op": OPERATOR, "value": VALUE}

Only the fields and operators in FIELDS reach a query: the request names them by key, and the
key selects our own lookup; nothing from the request is used as a field name or SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Q

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
    errors.append(f"{path}: expected all, any, not, or field/op/value, got {sorted(keys)}")
    return None


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


def rule_compile(rule: dict) -> Q:
    """A validated rule as a Q over aggregation's Profile."""
    if "all" in rule:
        result = Q()
        for child in rule["all"]:
            result &= rule_compile(child)
        return result
    if "any" in rule:
        result = Q(pk__in=[])
        for child in rule["any"]:
            result |= rule_compile(child)
        return result
    if "not" in rule:
        return ~rule_compile(rule["not"])
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


def rule_matches(rule: dict, profile: dict[str, Any]) -> bool:
    """Evaluate a validated rule against one profile's values, as rule_compile would."""
    if "all" in rule:
        return all(rule_matches(child, profile) for child in rule["all"])
    if "any" in rule:
        return any(rule_matches(child, profile) for child in rule["any"])
    if "not" in rule:
        return not rule_matches(rule["not"], profile)
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
    return {
        "eq": actual == value,
        "ne": actual != value,
        "gt": actual > value,
        "gte": actual >= value,
        "lt": actual < value,
        "lte": actual <= value,
    }[op]
