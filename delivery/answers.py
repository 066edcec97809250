"""The answer for one visitor in each placement, from a node's local tables (D1, D2, D3). Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from delivery.criteria import RequestFacts, conditions_match
from delivery.tablefile import Table
from delivery.tables import ClientView, PlacementView


def placements_answer(
    view: ClientView,
    *,
    visitor_id: str,
    placement_keys: Sequence[str],
    facts: Callable[[], RequestFacts] | None = None,
    cap_take: Callable[[PlacementView], bool] | None = None,
) -> list[dict]:
    """One answer per placement asked: the table's content for the visitor, else the default.

    `facts` gives what the request says about itself, asked for only when a table has rules
    with request-time conditions; without it no such rule holds. `cap_take` counts a view of
    a capped campaign's content and says whether it may still be shown (else: the default).
    """
    answers: list[dict[str, Any]] = []
    for key in placement_keys:
        placement = view.placements.get(key)
        if placement is None:
            answers.append(
                {
                    "placement": key,
                    "campaign": None,
                    "content": None,
                    "version": None,
                    "source": "unknown-placement",
                }
            )
            continue
        table = placement.table
        content: dict[str, Any] | None = placement.default
        source = "default"
        if table is not None and visitor_id:
            content_id = _content_id(table, visitor_id, view.time_zone, facts)
            if content_id is not None:
                content, source = table.contents[content_id], "table"
            if (
                source == "table"
                and content is not None
                and placement.cap_views
                and cap_take is not None
                and not cap_take(placement)
            ):
                content, source = placement.default, "capped"
        answers.append(
            {
                "placement": key,
                "campaign": placement.campaign_key,
                "content": content,
                "version": table.version if table is not None else None,
                "source": source,
            }
        )
    return answers


def _content_id(
    table: Table, visitor_id: str, time_zone: str, facts: Callable[[], RequestFacts] | None
) -> int | None:
    """The visitor's content id in a table; None for the placement's default."""
    content_id, mask = table.row(visitor_id)
    if mask and facts is not None:
        # Rules are in priority order and only those that beat the visitor's content are set.
        known = facts()
        for position, rule in enumerate(table.rules):
            if mask >> position & 1 and conditions_match(
                rule.conditions, known, time_zone=time_zone
            ):
                return rule.content_id
    return content_id
