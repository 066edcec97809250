"""The compiled rule (one query) and the in-memory evaluator agree (S2), on random worlds.

Hypothesis draws nested rules of profile conditions and behaviours (counts, windows, category
and product filters, abandoned carts), and a small world of profiles, events and one joined
visitor; the query must select exactly the profiles the evaluator accepts.
"""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregation.models import Event, Profile, VisitorLink
from segmentation.rules import (
    BEHAVIOURS,
    COUNT_SQL,
    FIELDS,
    SOURCES,
    rule_compile,
    rule_matches,
    rule_validate,
)
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
IDLE = timedelta(minutes=30)
VISITORS = ["v0", "v1", "v2", "v3", "v4"]
CATEGORIES = ["clubs", "balls"]
PRODUCTS = ["driver", "putter"]


def _condition(name: str):
    field = FIELDS[name]
    if field.kind == "bool":
        value = st.booleans()
    elif field.kind == "choice":
        value = st.sampled_from(SOURCES)
    elif field.kind == "money":
        value = st.sampled_from(["0", "10", "25.50", "100"])
    else:
        value = st.integers(min_value=0, max_value=4)
    operators = [op for op in field.operators if op != "in"]
    return st.fixed_dictionaries(
        {"field": st.just(name), "op": st.sampled_from(operators), "value": value}
    )


conditions = st.sampled_from(sorted(FIELDS)).flatmap(_condition)


@st.composite
def behaviours(draw):
    rule = {
        # Orders and abandoned carts, the behaviours with rules of their own, weigh more.
        "event": draw(
            st.sampled_from([*sorted(BEHAVIOURS), *["purchase", "cart_abandonment"] * 3])
        ),
        "count": {
            "op": draw(st.sampled_from(sorted(COUNT_SQL))),
            "value": draw(st.integers(min_value=0, max_value=3)),
        },
    }
    window = draw(st.sampled_from(["none", "days", "between"]))
    if window == "days":
        rule["within_days"] = draw(st.integers(min_value=1, max_value=10))
    elif window == "between":
        first = draw(st.integers(min_value=0, max_value=10))
        last = draw(st.integers(min_value=0, max_value=5))
        rule["between"] = [
            (NOW - timedelta(days=first)).date().isoformat(),
            (NOW - timedelta(days=max(first - last, 0))).date().isoformat(),
        ]
    if rule["event"] != "cart_abandonment":
        # A filter in one behaviour out of three: filtered counts are mostly zero.
        if draw(st.sampled_from([False, False, True])):
            rule["category"] = draw(st.sampled_from(CATEGORIES))
        if draw(st.sampled_from([False, False, True])):
            rule["product_id"] = draw(st.sampled_from(PRODUCTS))
    return rule


rules = st.recursive(
    conditions | behaviours(),
    lambda children: (
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"all": items})
        | st.lists(children, min_size=1, max_size=3).map(lambda items: {"any": items})
        | children.map(lambda child: {"not": child})
    ),
    max_leaves=6,
)

events = st.lists(
    st.fixed_dictionaries(
        {
            # Most events on two visitors, so that counts reach the thresholds.
            "visitor_id": st.sampled_from(["v0", "v0", "v1", "v1", *VISITORS[2:]]),
            # Purchases and cart adds weigh more: orders and abandoned carts need several.
            "type": st.sampled_from(
                ["page_view", "product_view", "category_view", "search"]
                + ["cart_add", "purchase"] * 3
            ),
            "session_id": st.sampled_from(["", "s1", "s2"]),
            # Half hours back from NOW, up to 10 days: windows and the 30-minute idle limit
            # fall on events as often as between them.
            "half_hours_ago": st.integers(min_value=0, max_value=480),
            "order_id": st.sampled_from(["", "o1"]),
            "category": st.sampled_from(["", *CATEGORIES]),
            "product_id": st.sampled_from(["", *PRODUCTS]),
        }
    ),
    min_size=10,
    max_size=40,
)

profiles = st.lists(
    st.fixed_dictionaries(
        {
            "visits": st.integers(min_value=0, max_value=4),
            "purchases": st.integers(min_value=0, max_value=4),
            "cart_adds": st.integers(min_value=0, max_value=4),
            "total_spent": st.sampled_from([Decimal("0"), Decimal("25.50"), Decimal("100")]),
            "source": st.sampled_from(SOURCES),
            "email": st.sampled_from(["", "a@example.com"]),
        }
    ),
    min_size=4,
    max_size=4,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rule=rules, drawn_profiles=profiles, drawn_events=events, joined=st.booleans())
def test_compiled_rules_select_what_the_evaluator_accepts(
    rule, drawn_profiles, drawn_events, joined
):
    rule = rule_validate(rule)
    client = ClientFactory()
    # v0..v3 have profiles; v4 is joined to v0 (its events count for v0) or a stranger
    # without a profile (its events count for nobody).
    Profile.objects.bulk_create(
        Profile(
            client=client,
            visitor_id=visitor_id,
            first_seen_at=NOW,
            last_seen_at=NOW,
            **values,
        )
        for visitor_id, values in zip(VISITORS, drawn_profiles, strict=False)
    )
    if joined:
        VisitorLink.objects.create(
            client=client, visitor_id="v4", canonical_id="v0", email="a@example.com"
        )
    stored = Event.objects.bulk_create(
        Event(
            client=client,
            event_id=uuid.uuid4(),
            visitor_id=item["visitor_id"],
            type=item["type"],
            session_id=item["session_id"],
            occurred_at=NOW - timedelta(minutes=30 * item["half_hours_ago"]),
            received_at=NOW,
            order_id=item["order_id"],
            category=item["category"],
            product_id=item["product_id"],
        )
        for item in drawn_events
    )
    members = {"v0": {"v0", "v4"} if joined else {"v0"}}

    compiled = set(
        Profile.objects.filter(
            rule_compile(rule, client_id=client.pk, now=NOW, idle=IDLE), client=client
        ).values_list("visitor_id", flat=True)
    )
    evaluated = {
        values["visitor_id"]
        for values in Profile.objects.filter(client=client).values()
        if rule_matches(
            rule,
            values,
            events=[
                event
                for event in stored
                if event.visitor_id in members.get(values["visitor_id"], {values["visitor_id"]})
            ],
            now=NOW,
            idle=IDLE,
        )
    }

    assert compiled == evaluated
    client.delete()
