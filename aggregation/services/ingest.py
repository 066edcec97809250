"""Ingest (A1, D4, D1): tracked events, delivery answers and clicks, checked and spooled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from aggregation import spool
from aggregation.records import (
    TEXT_LIMITS,
    RecordError,
    delivery_record,
    event_from_tag,
    record_new,
    timestamp_ms,
)
from delivery.identity import SESSION_ID_RE, visitor_id_is_valid


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


def batch_collect(*, client_id: int, batch: dict, received_at: datetime) -> CollectResult:
    """events_collect for a batch batch_errors found nothing wrong with (the tag's, or one
    sent to the API); raises OSError when it cannot store."""
    return events_collect(
        client_id=client_id,
        visitor_id=batch["visitor"],
        session_id=batch["session"],
        sent_at_ms=float(batch["sent_at"]),
        events=batch["events"],
        received_at=received_at,
    )


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


def batch_errors(batch: object) -> list[str]:
    """What is wrong with an event batch as a whole (its events are checked one by one when
    collected); [] when nothing is."""
    if not isinstance(batch, dict):
        return ["body must be a JSON object"]
    errors = []
    visitor_id = batch.get("visitor")
    if not isinstance(visitor_id, str) or not visitor_id_is_valid(visitor_id):
        errors.append("visitor must be a visitor id issued by this server")
    session_id = batch.get("session")
    if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        errors.append("session must be a session id issued by this server")
    try:
        timestamp_ms(batch.get("sent_at"), "sent_at")
    except RecordError as error:
        errors.append(str(error))
    events = batch.get("events")
    if not isinstance(events, list) or not events:
        errors.append("events must be a non-empty list")
    elif len(events) > settings.COLLECT_MAX_EVENTS:
        errors.append(f"events holds more than {settings.COLLECT_MAX_EVENTS} events")
    return errors


def email_activity_spool(
    *,
    client_id: int,
    kind: str,
    visitor_id: str,
    message_id: int,
    user_agent: str,
    ip: str,
    at: datetime,
    url: str = "",
    is_decoy: bool = False,
) -> None:
    """Spool an open ("email_open") or a click ("email_click") of an email message (C2); no
    database on the way. Raises OSError when the disk refuses."""
    spool.spool_append(
        [
            record_new(
                client_id=client_id,
                kind=kind,
                visitor_id=visitor_id,
                occurred_at=at,
                url=url[: TEXT_LIMITS["url"]],
                properties={
                    "message": message_id,
                    "user_agent": user_agent[:300],
                    "ip": ip,
                    "decoy": is_decoy,
                },
            )
        ]
    )
