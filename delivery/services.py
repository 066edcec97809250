"""Publishing what delivery nodes serve (D2)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.db import connection

from campaigns.selectors import campaigns_active, content_answer
from coremetrics.bulk import copy_line, lines_upsert
from coremetrics.models import Client
from delivery.models import Visitor
from delivery.stores import store_get
from delivery.tablefile import Rule, Table, table_decode, table_encode
from delivery.tag import client_tag_config
from segmentation.selectors import table_versions_serving


def manifest_publish(*, client_id: int) -> dict:
    """Write the client's manifest: per placement its campaign, default and serving version."""
    client = Client.objects.prefetch_related("sites").get(pk=client_id)
    serving = table_versions_serving(client_id=client_id)
    placements = {}
    if client.is_active:
        for campaign in campaigns_active(client_id=client_id):
            placements[campaign.placement.key] = {
                "campaign_id": campaign.pk,
                "campaign": campaign.key,
                "default": content_answer(campaign.default_content),
                "version": serving.get(campaign.pk),
                "cap": (
                    {"views": campaign.cap_views, "per": campaign.cap_period}
                    if campaign.cap_views
                    else None
                ),
            }
    manifest = {
        "client_id": client.pk,
        "public_key": client.public_key,
        "origins": sorted(site.origin.rstrip("/") for site in client.sites.all()),
        "tag": client_tag_config(client),
        "time_zone": client.timezone,
        "placements": placements,
    }
    store_get().manifest_put(client.public_key, _dumps(manifest))
    return manifest


def table_store(
    *,
    campaign_id: int,
    version: int,
    contents: Mapping[int, dict | None],
    visitors: Mapping[str, int],
    rules: Sequence[Rule] = (),
    masks: Mapping[str, int] | None = None,
    unknown: tuple[int | None, int] = (None, 0),
) -> None:
    """Write one table version (immutable); it serves once a manifest names it."""
    data = table_encode(
        campaign_id=campaign_id,
        version=version,
        contents=contents,
        visitors=visitors,
        rules=rules,
        masks=masks,
        unknown=unknown,
    )
    store_get().table_put(campaign_id, version, data)


def table_read(*, campaign_id: int, version: int) -> Table | None:
    """A stored table version, or None when the store no longer has it."""
    data = store_get().table_get(campaign_id, version)
    return table_decode(data) if data is not None else None


def table_exists(*, campaign_id: int, version: int) -> bool:
    return store_get().table_exists(campaign_id, version)


def table_discard(*, campaign_id: int, version: int) -> None:
    store_get().table_delete(campaign_id, version)


@dataclass(frozen=True)
class VisitorSeen:
    visitor_id: str
    first_seen_at: datetime
    last_seen_at: datetime
    session_id: str


def visitors_upsert(*, client_id: int, visitors: list[VisitorSeen]) -> None:
    """Record issued visitor ids seen in events, with the server-side copy of their cookie (D5)."""
    if not visitors:
        return
    if connection.vendor == "postgresql":
        # COPY, without the ORM's per-field work: consolidation calls this for every visitor
        # it loads.
        lines_upsert(
            table="delivery_visitor",
            columns=["client_id", "visitor_id", "first_seen_at", "last_seen_at", "cookie_data"],
            lines=(
                copy_line(
                    (
                        client_id,
                        seen.visitor_id,
                        seen.first_seen_at,
                        seen.last_seen_at,
                        orjson.dumps(
                            {"visitor": seen.visitor_id, "session": seen.session_id}
                        ).decode(),
                    )
                )
                for seen in visitors
            ),
            conflict=["client_id", "visitor_id"],
            update=["first_seen_at", "last_seen_at", "cookie_data"],
        )
        return
    Visitor.objects.bulk_create(
        [
            Visitor(
                client_id=client_id,
                visitor_id=seen.visitor_id,
                first_seen_at=seen.first_seen_at,
                last_seen_at=seen.last_seen_at,
                cookie_data={"visitor": seen.visitor_id, "session": seen.session_id},
            )
            for seen in visitors
        ],
        update_conflicts=True,
        unique_fields=["client", "visitor_id"],
        update_fields=["first_seen_at", "last_seen_at", "cookie_data"],
    )


def _dumps(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
