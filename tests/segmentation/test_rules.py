from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from aggregation.models import Profile
from segmentation.rules import SOURCES, RuleError, rule_compile, rule_matches, rule_validate
from tests.factories import ClientFactory, ProfileFactory

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
IDLE = timedelta(minutes=30)
BOUGHT = {"field": "purchases", "op": "gte", "value": 1}
VISITED_MORE_THAN_ONCE = {"field": "visits", "op": "gt", "value": 1}
FIRST_TIME = {"field": "first_time", "op": "is", "value": True}
CART_THREE_TIMES_REMOVED = {
    "all": [
        {"field": "cart_adds", "op": "gte", "value": 3},
        {"field": "cart_removes", "op": "gte", "value": 3},
        {"field": "purchases", "op": "eq", "value": 0},
    ]
}
ABANDONED = {"field": "cart_abandonments", "op": "gte", "value": 1}


def _errors(rule):
    with pytest.raises(RuleError) as raised:
        rule_validate(rule)
    return raised.value.errors


def _nested_nots(levels):
    rule = BOUGHT
    for _ in range(levels):
        rule = {"not": rule}
    return rule


@pytest.mark.parametrize(
    "rule",
    [
        BOUGHT,
        VISITED_MORE_THAN_ONCE,
        FIRST_TIME,
        CART_THREE_TIMES_REMOVED,
        ABANDONED,
        {"any": [BOUGHT, {"not": FIRST_TIME}]},
        {"all": [{"any": [ABANDONED, CART_THREE_TIMES_REMOVED]}, {"not": {"not": BOUGHT}}]},
        {"field": "total_spent", "op": "gte", "value": "100.50"},
        {"field": "has_email", "op": "is", "value": False},
        {"field": "source", "op": "in", "value": ["search", "email"]},
        {"field": "source", "op": "ne", "value": "direct"},
        _nested_nots(8),
        {"all": [BOUGHT] * 50},
    ],
    ids=[
        "bought-at-least-once",
        "visited-more-than-once",
        "first-time-visitors",
        "cart-three-times-removed-before-checkout",
        "abandoned-a-cart",
        "any-with-not",
        "nested-all-any-not",
        "money",
        "has-email",
        "source-in",
        "source-ne",
        "eight-levels-deep",
        "fifty-conditions",
    ],
)
def test_rule_validate_accepts_example_rules_unchanged(rule):
    assert rule_validate(rule) == rule


def test_rule_validate_types_values():
    rule = {
        "all": [
            {"field": "visits", "op": "gt", "value": "2"},
            {"field": "total_spent", "op": "lt", "value": 99.5},
            {"field": "total_spent", "op": "gt", "value": 10},
        ]
    }

    assert rule_validate(rule) == {
        "all": [
            {"field": "visits", "op": "gt", "value": 2},
            {"field": "total_spent", "op": "lt", "value": "99.5"},
            {"field": "total_spent", "op": "gt", "value": "10"},
        ]
    }


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"field": "age", "op": "gt", "value": 30}, "rule.field: unknown field 'age'"),
        ({"field": "visits__gt", "op": "eq", "value": 1}, "rule.field: unknown field 'visits__gt'"),
        ({"field": "client_id", "op": "eq", "value": 2}, "rule.field: unknown field 'client_id'"),
        (
            {"field": "visits) OR 1=1 --", "op": "eq", "value": 1},
            "rule.field: unknown field 'visits) OR 1=1 --'",
        ),
        ({"field": ["visits"], "op": "eq", "value": 1}, "rule.field: unknown field ['visits']"),
        (
            {"field": "visits", "op": "gt' OR '1'='1", "value": 1},
            "rule.op: \"gt' OR '1'='1\" is not an operator of visits",
        ),
        (
            {"field": "visits", "op": "in", "value": [1]},
            "rule.op: 'in' is not an operator of visits",
        ),
        (
            {"field": "first_time", "op": "gt", "value": 1},
            "rule.op: 'gt' is not an operator of first_time",
        ),
        (
            {"field": "source", "op": "gte", "value": "email"},
            "rule.op: 'gte' is not an operator of source",
        ),
        ({"field": "visits", "op": "gt", "value": "many"}, "rule.value: must be a whole number"),
        ({"field": "visits", "op": "gt", "value": 1.5}, "rule.value: must be a whole number"),
        ({"field": "visits", "op": "gt", "value": 2.0}, "rule.value: must be a whole number"),
        ({"field": "visits", "op": "gt", "value": True}, "rule.value: must be a number"),
        ({"field": "visits", "op": "gt", "value": None}, "rule.value: must be a number"),
        ({"field": "visits", "op": "gt", "value": [1]}, "rule.value: must be a number"),
        ({"field": "total_spent", "op": "gt", "value": False}, "rule.value: must be a number"),
        ({"field": "total_spent", "op": "gt", "value": "lots"}, "rule.value: must be a number"),
        (
            {"field": "total_spent", "op": "gt", "value": "NaN"},
            "rule.value: must be a finite number",
        ),
        (
            {"field": "total_spent", "op": "gt", "value": "Infinity"},
            "rule.value: must be a finite number",
        ),
        ({"field": "has_email", "op": "is", "value": "yes"}, "rule.value: must be true or false"),
        ({"field": "first_time", "op": "is", "value": 1}, "rule.value: must be true or false"),
        (
            {"field": "source", "op": "eq", "value": "tv"},
            "rule.value: 'tv' is not one of direct, referral, search, campaign, email",
        ),
        (
            {"field": "source", "op": "in", "value": ["email", "radio"]},
            "rule.value: 'radio' is not one of direct, referral, search, campaign, email",
        ),
        ({"field": "source", "op": "in", "value": []}, "rule.value: must be a non-empty list"),
        ({"field": "source", "op": "in", "value": "email"}, "rule.value: must be a non-empty list"),
        ({"all": []}, "rule.all: must be a non-empty list"),
        ({"any": []}, "rule.any: must be a non-empty list"),
        ({"any": BOUGHT}, "rule.any: must be a non-empty list"),
        (
            {"field": "visits", "op": "gt", "value": 1, "table": "auth_user"},
            "rule: expected all, any, not, field/op/value or event/count, got "
            "['field', 'op', 'table', 'value']",
        ),
        (
            {"all": [BOUGHT], "any": [BOUGHT]},
            "rule: expected all, any, not, field/op/value or event/count, got ['all', 'any']",
        ),
        (
            {"field": "visits", "op": "gt"},
            "rule: expected all, any, not, field/op/value or event/count, got ['field', 'op']",
        ),
        ({}, "rule: expected all, any, not, field/op/value or event/count, got []"),
        ([BOUGHT], "rule: must be an object"),
        ({"not": "purchases"}, "rule.not: must be an object"),
        (
            _nested_nots(9),
            "rule.not.not.not.not.not.not.not.not.not: nested deeper than 8 levels",
        ),
        ({"all": [BOUGHT] * 51}, "rule: at most 50 conditions, found 51"),
        (
            {"any": [{"all": [BOUGHT] * 30}, {"all": [ABANDONED] * 21}]},
            "rule: at most 50 conditions, found 51",
        ),
    ],
)
def test_rule_validate_rejects_with_exact_error(rule, error):
    assert _errors(rule) == [error]


def test_rule_validate_reports_every_problem_with_its_path():
    rule = {
        "all": [
            BOUGHT,
            {"any": [{"field": "age", "op": "gt", "value": 1}, {"not": []}]},
            {"field": "visits", "op": "lt", "value": "few"},
        ]
    }

    with pytest.raises(RuleError) as raised:
        rule_validate(rule)

    assert raised.value.errors == [
        "rule.all[1].any[0].field: unknown field 'age'",
        "rule.all[1].any[1].not: must be an object",
        "rule.all[2].value: must be a whole number",
    ]
    assert str(raised.value) == "; ".join(raised.value.errors)


KNOWN_NON_BUYERS_OR_BIG_SPENDERS = {
    "any": [
        {"all": [{"field": "has_email", "op": "is", "value": True}, {"not": BOUGHT}]},
        {"field": "total_spent", "op": "gt", "value": 100},
    ]
}
PROFILE_RULES = [
    BOUGHT,
    VISITED_MORE_THAN_ONCE,
    FIRST_TIME,
    {"field": "first_time", "op": "is", "value": False},
    CART_THREE_TIMES_REMOVED,
    ABANDONED,
    {"field": "total_spent", "op": "gte", "value": "52.50"},
    {"field": "total_spent", "op": "lt", "value": "17.5"},
    {"field": "total_spent", "op": "eq", "value": "35.00"},
    {"field": "total_spent", "op": "ne", "value": "0"},
    {"field": "total_spent", "op": "gt", "value": "17.505"},
    {"field": "page_views", "op": "lte", "value": 7},
    {"field": "product_views", "op": "ne", "value": 2},
    {"field": "source", "op": "in", "value": ["search", "campaign"]},
    {"field": "source", "op": "eq", "value": "email"},
    {"field": "source", "op": "ne", "value": "direct"},
    {"field": "has_email", "op": "is", "value": True},
    {"field": "has_email", "op": "is", "value": False},
    {"not": BOUGHT},
    {"not": {"any": [FIRST_TIME, {"field": "source", "op": "eq", "value": "referral"}]}},
    KNOWN_NON_BUYERS_OR_BIG_SPENDERS,
    {"all": [VISITED_MORE_THAN_ONCE, {"not": {"field": "source", "op": "in", "value": SOURCES}}]},
    {"field": "visits", "op": "gte", "value": -1},
    {"not": {"field": "visits", "op": "lt", "value": 10**30}},
]


@pytest.fixture
def profiles():
    """Twenty profiles of one client with every field varied, and one of another client."""
    client = ClientFactory()
    ProfileFactory(purchases=5, total_spent=Decimal("900.00"), visits=9)
    return [
        ProfileFactory(
            client=client,
            visits=index % 4,
            page_views=index % 9,
            product_views=index % 3,
            cart_adds=index % 5,
            cart_removes=(index * 2) % 5,
            cart_abandonments=index % 2,
            purchases=index % 3 if index % 5 else 0,
            total_spent=Decimal(index % 7) * Decimal("17.50"),
            source=SOURCES[index % 5],
            email=f"visitor{index}@example.com" if index % 3 else "",
        )
        for index in range(20)
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("rule", PROFILE_RULES)
def test_rule_compile_selects_exactly_the_profiles_rule_matches_accepts(rule, profiles):
    rule = rule_validate(rule)
    client_id = profiles[0].client_id

    compiled = set(
        Profile.objects.filter(
            rule_compile(rule, client_id=client_id, now=NOW, idle=IDLE), client_id=client_id
        ).values_list("visitor_id", flat=True)
    )
    evaluated = {
        values["visitor_id"]
        for values in Profile.objects.filter(client_id=client_id).values()
        if rule_matches(rule, values, now=NOW, idle=IDLE)
    }

    assert compiled == evaluated


@pytest.mark.django_db
def test_rule_compile_example_selects_the_expected_visitors():
    client = ClientFactory()
    hesitant = ProfileFactory(client=client, cart_adds=3, cart_removes=4, visits=2)
    ProfileFactory(client=client, cart_adds=3, cart_removes=3, purchases=1, visits=2)
    ProfileFactory(client=client, cart_adds=2, cart_removes=3, visits=2)
    newcomer = ProfileFactory(client=client, visits=1)
    rule = rule_validate({"any": [CART_THREE_TIMES_REMOVED, FIRST_TIME]})

    selected = Profile.objects.filter(
        rule_compile(rule, client_id=client.pk, now=NOW, idle=IDLE), client=client
    )

    assert set(selected.values_list("visitor_id", flat=True)) == {
        hesitant.visitor_id,
        newcomer.visitor_id,
    }


@pytest.mark.django_db
def test_rule_compile_is_one_query(profiles, django_assert_num_queries):
    rule = rule_validate(KNOWN_NON_BUYERS_OR_BIG_SPENDERS)

    with django_assert_num_queries(1):
        selected = list(
            Profile.objects.filter(
                rule_compile(rule, client_id=profiles[0].client_id, now=NOW, idle=IDLE),
                client_id=profiles[0].client_id,
            )
        )

    assert len(selected) == len(
        [
            profile
            for profile in Profile.objects.filter(client_id=profiles[0].client_id).values()
            if rule_matches(rule, profile, now=NOW, idle=IDLE)
        ]
    )
