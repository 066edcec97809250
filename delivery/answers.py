"""The answer for one visitor in each placement, from a node's local tables (D1, D2). Pure."""

from __future__ import annotations

from typing import Any

from delivery.tables import ClientView


def placements_answer(
    view: ClientView, *, visitor_id: str, placement_keys: list[str]
) -> list[dict]:
    """One answer per placement asked: the table's content for the visitor, else the default."""
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
        content_id = table.visitors.get(visitor_id) if table is not None else None
        content: dict[str, Any] | None = placement.default
        source = "default"
        if table is not None and content_id is not None:
            content, source = table.contents[content_id], "table"
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
