"""Ingest (A1, D4, D1): tracked events, delivery answers and clicks, checked and spooled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aggregation import spool
from aggregation.records import (
    TEXT_LIMITS,
    RecordError,
    delivery_record,
    event_from_tag,
    record_new,
)


@dataclass
class CollectResult:
    accepted: int
    rejected: list[dict]


def events_collect(
    *,
    client_id: int,
    visitor_id: str,
    session_id: str,
    sent_at_ms: float,
    events: list,
    received_at: datetime,
) -> CollectResult:
    """Spool the batch's valid events; name each refused one with its reason (raises OSError)."""
    records, rejected = [], []
    for index, event in enumerate(events):
        try:
            records.append(
                event_from_tag(
                    event,
                    client_id=client_id,
                    visitor_id=visitor_id,
                    session_id=session_id,
                    sent_at_ms=sent_at_ms,
                    received_at=received_at,
                )
            )
        except RecordError as error:
            event_id = event.get("id") if isinstance(event, dict) else None
            rejected.append({"index": index, "id": event_id, "error": str(error)})
    spool.spool_append(records)
    return CollectResult(accepted=len(records), rejected=rejected)


def deliveries_spool(
    *,
    client_id: int,
    visitor_id: str,
    session_id: str,
    answers: list[dict],
    url: str,
    referrer: str,
    at: datetime,
) -> None:
    """Spool one record per delivery answer (D4); raises OSError when the disk refuses."""
    spool.spool_append(
        delivery_record(
            client_id=client_id,
            visitor_id=visitor_id,
            session_id=session_id,
            placement_key=answer["placement"],
            campaign_key=answer["campaign"],
            content_id=answer["content"]["id"] if answer["content"] else None,
            table_version=answer["version"],
            url=url,
            referrer=referrer,
            at=at,
        )
        for answer in answers
    )


def click_spool(
    *,
    client_id: int,
    visitor_id: str,
    session_id: str,
    campaign_key: str,
    content_id: int,
    table_version: int | None,
    referrer: str,
    at: datetime,
) -> None:
    """Spool one click through our redirect (D1); raises OSError when the disk refuses."""
    spool.spool_append(
        [
            record_new(
                client_id=client_id,
                kind="click",
                visitor_id=visitor_id,
                session_id=session_id,
                occurred_at=at,
                campaign_key=campaign_key,
                content_id=content_id,
                table_version=table_version,
                referrer=referrer[: TEXT_LIMITS["referrer"]],
            )
        ]
    )
