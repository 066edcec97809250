"""Segments and lookup-table builds (S2, S4)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from aggregation.selectors import profiles_matching, visitor_links
from campaigns.selectors import (
    attachments_for_campaign,
    campaign_get,
    campaigns_active,
    content_answer,
)
from coremetrics.models import Client
from coremetrics.selectors import clients_all
from delivery.services import manifest_publish, table_discard, table_store
from segmentation.models import TableVersion
from segmentation.rules import RuleError, rule_compile, rule_validate

logger = logging.getLogger(__name__)


def rule_condition(*, rule: Any, client_id: int, now: datetime | None = None) -> Q:
    """A segment rule (validated here) as the condition over the client's profiles, its
    windows anchored at `now`; raises RuleError."""
    return rule_compile(
        rule_validate(rule),
        client_id=client_id,
        now=now or timezone.now(),
        idle=timedelta(minutes=settings.SESSION_IDLE_MINUTES),
    )


AUDIENCE_SAMPLE_FIELDS = ["visitor_id", "visits", "purchases", "total_spent", "last_seen_at"]


def segment_audience(*, client_id: int, rule: Any, sample_size: int = 10) -> dict:
    """How many of the client's profiles a rule matches now, with the most recently seen few
    of them; raises RuleError naming every problem of the rule."""
    matching = profiles_matching(
        client_id=client_id, condition=rule_condition(rule=rule, client_id=client_id)
    )
    return {
        "count": matching.count(),
        "sample": list(
            matching.order_by("-last_seen_at")[:sample_size].values(*AUDIENCE_SAMPLE_FIELDS)
        ),
    }


@dataclass
class TableContent:
    contents: dict[int, dict | None]
    visitors: dict[str, int]
    segment_counts: dict[str, int]

    @property
    def checksum(self) -> str:
        body = json.dumps([sorted(self.contents.items()), sorted(self.visitors.items())])
        return hashlib.sha256(body.encode()).hexdigest()


def _table_compute(campaign) -> TableContent:
    """Who gets what: per attachment, by priority, one query for the segment's visitors."""
    table = TableContent(contents={}, visitors={}, segment_counts={})
    now = timezone.now()
    if campaign.default_content is not None:
        table.contents[campaign.default_content.pk] = content_answer(campaign.default_content)
    for attachment in attachments_for_campaign(campaign_id=campaign.pk):
        try:
            condition = rule_condition(
                rule=attachment.segment.rule, client_id=campaign.client_id, now=now
            )
        except RuleError as error:
            raise RuleError([f"segment {attachment.segment}: {e}" for e in error.errors]) from None
        visitor_ids = profiles_matching(
            client_id=campaign.client_id, condition=condition
        ).values_list("visitor_id", flat=True)
        matched = 0
        for visitor_id in visitor_ids.iterator(chunk_size=5000):
            matched += 1
            table.visitors.setdefault(visitor_id, attachment.content_id)
        table.segment_counts[attachment.segment.name] = matched
        table.contents[attachment.content_id] = content_answer(attachment.content)
    # A visitor joined to another's profile (same email) gets what that profile gets.
    for alias, canonical in visitor_links(client_id=campaign.client_id).items():
        if canonical in table.visitors:
            table.visitors[alias] = table.visitors[canonical]
    return table


def table_build(*, campaign_id: int) -> TableVersion:
    """Build the campaign's next table version and publish it; on failure the old one serves.

    Idempotent: when the table comes out as the one serving, no version is added.
    """
    campaign = campaign_get(campaign_id=campaign_id)
    with transaction.atomic():
        # Serialises concurrent builds of one campaign so version numbers stay unique.
        type(campaign).objects.select_for_update().filter(pk=campaign.pk).first()
        number = (campaign.table_versions.aggregate(Max("number"))["number__max"] or 0) + 1
        version = TableVersion.objects.create(
            client_id=campaign.client_id, campaign=campaign, number=number
        )
    try:
        table = _table_compute(campaign)
        serving = TableVersion.objects.filter(
            campaign=campaign, status=TableVersion.Status.PUBLISHED
        ).first()
        if serving is not None and serving.checksum == table.checksum:
            version.delete()
            return serving
        table_store(
            campaign_id=campaign.pk,
            version=number,
            table={
                "campaign_id": campaign.pk,
                "version": number,
                "contents": {str(ident): answer for ident, answer in table.contents.items()},
                "visitors": table.visitors,
            },
        )
        _publish(version, table)
    except Exception as error:
        logger.exception("table build of campaign %s failed", campaign.pk)
        version.status = TableVersion.Status.FAILED
        version.error = f"{type(error).__name__}: {error}"
        version.finished_at = timezone.now()
        version.published_at = None
        version.save(update_fields=["status", "error", "finished_at", "published_at"])
        return version
    _prune(campaign_id=campaign.pk)
    return version


def _publish(version: TableVersion, table: TableContent) -> None:
    names = {ident: answer["name"] for ident, answer in table.contents.items() if answer}
    version.visitor_count = len(table.visitors)
    version.segment_counts = table.segment_counts
    version.content_counts = {
        names[ident]: count for ident, count in Counter(table.visitors.values()).items()
    }
    version.checksum = table.checksum
    version.finished_at = timezone.now()
    with transaction.atomic():
        # Manifests of one client are written one at a time, each from committed state,
        # so two campaigns publishing at once cannot undo each other's switch.
        Client.objects.select_for_update().filter(pk=version.client_id).first()
        newer = TableVersion.objects.filter(
            campaign_id=version.campaign_id,
            status=TableVersion.Status.PUBLISHED,
            number__gt=version.number,
        )
        if newer.exists():
            # A build that started later has published already; ours is older news.
            version.status = TableVersion.Status.SUPERSEDED
            version.save()
            return
        TableVersion.objects.filter(
            campaign_id=version.campaign_id, status=TableVersion.Status.PUBLISHED
        ).update(status=TableVersion.Status.SUPERSEDED)
        version.status = TableVersion.Status.PUBLISHED
        version.published_at = version.finished_at
        version.save()
        manifest_publish(client_id=version.client_id)


def _prune(*, campaign_id: int) -> None:
    """Drop stored tables beyond the newest TABLE_VERSIONS_KEPT (kept for rollback)."""
    old = (
        TableVersion.objects.filter(campaign_id=campaign_id)
        .exclude(status=TableVersion.Status.PUBLISHED)
        .order_by("-number")[settings.TABLE_VERSIONS_KEPT :]
    )
    for version in old:
        table_discard(campaign_id=campaign_id, version=version.number)


def tables_build(*, client_id: int | None = None) -> list[TableVersion]:
    """Build every active campaign's table (of one client, or of all clients), and publish
    every client's manifest, so that deactivated clients and campaigns stop serving."""
    versions = [
        table_build(campaign_id=campaign.pk) for campaign in campaigns_active(client_id=client_id)
    ]
    for client in clients_all(client_id=client_id):
        manifest_publish(client_id=client.pk)
    return versions
