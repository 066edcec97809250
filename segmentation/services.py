"""Segments and lookup-table builds (S2, S4)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from aggregation.selectors import (
    canonical_of,
    newcomer_profile,
    profiles_matching,
    visitor_links,
)
from campaigns.selectors import (
    attachments_for_campaign,
    campaign_get,
    campaigns_active,
    content_answer,
    contents_answers,
)
from campaigns.services import NOTHING, assignments_record, experiment_splits
from coremetrics.models import Client
from coremetrics.selectors import clients_all
from delivery.criteria import conditions_check
from delivery.services import (
    manifest_publish,
    table_discard,
    table_exists,
    table_read,
    table_store,
)
from delivery.tablefile import MAX_RULES, Rule
from delivery.tables import local_tables
from segmentation.models import TableVersion
from segmentation.rules import RuleError, rule_compile, rule_matches, rule_validate

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
    segment_seconds: dict[str, float] = field(default_factory=dict)
    # Visitors in two attachments' segments: [{winner, other, visitors}].
    overlaps: list[dict] = field(default_factory=list)
    # A/B tests: experiment id -> visitor id -> group key, for the visitors the test decides.
    assignments: dict[int, dict[str, str]] = field(default_factory=dict)
    # Attachments with request-time conditions (D3), in priority order, and per visitor the
    # bits of those that beat what the table gives them.
    rules: list[Rule] = field(default_factory=list)
    masks: dict[str, int] = field(default_factory=dict)
    # What a visitor without a profile gets: a content id (None: the default) and rule bits.
    unknown: tuple[int | None, int] = (None, 0)

    @cached_property
    def checksum(self) -> str:
        # Once per table (a million visitors take seconds): compared with the serving one,
        # then kept on the version.
        body = orjson.dumps(
            [
                sorted(self.contents.items()),
                sorted(self.visitors.items()),
                [(rule.content_id, rule.conditions) for rule in self.rules],
                sorted(self.masks.items()),
                self.unknown,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(body).hexdigest()


def _table_compute(campaign) -> TableContent:
    """Who gets what: per attachment, by priority, one query for the segment's visitors.

    An attachment with request-time conditions does not decide by itself: its visitors get a
    rule bit, and delivery shows its content when the request meets the conditions (D3). A
    visitor without a profile counts as a profile with no history: the attachments whose
    segments take such a visitor apply to them too (A/B tests aside: they split profiles).
    """
    table = TableContent(contents={}, visitors={}, segment_counts={})
    now = timezone.now()
    idle = timedelta(minutes=settings.SESSION_IDLE_MINUTES)
    if campaign.default_content is not None:
        table.contents[campaign.default_content.pk] = content_answer(campaign.default_content)
    attachments = attachments_for_campaign(campaign_id=campaign.pk)
    splits = experiment_splits(attachment_ids=[attachment.pk for attachment in attachments])
    # visitor -> index of the attachment that gives them their content (the first that matched)
    winners: dict[str, int] = {}
    # (winner's attachment, the other's) -> visitors in both segments
    overlaps: Counter[tuple[int, int]] = Counter()
    unknown_content: int | None = None
    unknown_mask = 0
    is_unknown_decided = False
    for index, attachment in enumerate(attachments):
        if not attachment.content.is_approved:
            # Script or HTML waiting for an admin's approval: as if not attached yet.
            continue
        started = time.perf_counter()
        try:
            rule = rule_validate(attachment.segment.rule)
            condition = rule_condition(rule=rule, client_id=campaign.client_id, now=now)
        except RuleError as error:
            raise RuleError([f"segment {attachment.segment}: {e}" for e in error.errors]) from None
        visitor_ids = profiles_matching(
            client_id=campaign.client_id, condition=condition
        ).values_list("visitor_id", flat=True)
        # A running A/B test of this segment splits its visitors among the test's groups.
        split = splits.get(attachment.pk)
        problems = conditions_check(attachment.conditions)
        if attachment.conditions and split is not None:
            problems.append("an A/B test needs an attachment without request-time conditions")
        if problems:
            raise RuleError([f"{_attachment_label(attachment)}: {p}" for p in problems])
        bit = 0
        if attachment.conditions:
            if len(table.rules) == MAX_RULES:
                raise RuleError([f"at most {MAX_RULES} attachments with request-time conditions"])
            bit = 1 << len(table.rules)
            table.rules.append(Rule(attachment.content_id, attachment.conditions))
        if not is_unknown_decided and split is None and _takes_a_newcomer(rule, now, idle):
            if bit:
                unknown_mask |= bit
            else:
                unknown_content, is_unknown_decided = attachment.content_id, True
        groups = table.assignments.setdefault(split.experiment_id, {}) if split else {}
        matched = 0
        for visitor_id in visitor_ids.iterator(chunk_size=5000):
            matched += 1
            if bit:
                if visitor_id not in winners:
                    table.masks[visitor_id] = table.masks.get(visitor_id, 0) | bit
                continue
            winner = winners.setdefault(visitor_id, index)
            if winner != index:
                overlaps[(winner, index)] += 1
            elif split is None:
                table.visitors[visitor_id] = attachment.content_id
            else:
                groups[visitor_id], shows = split.content_of(visitor_id)
                if shows == NOTHING:
                    table.visitors[visitor_id] = NOTHING_ID
                elif shows is not None:  # None: the campaign's default, as for anyone else
                    table.visitors[visitor_id] = int(shows)
        table.segment_counts[attachment.segment.name] = matched
        table.segment_seconds[attachment.segment.name] = round(time.perf_counter() - started, 3)
        table.contents[attachment.content_id] = content_answer(attachment.content)
        if split is not None:
            table.contents |= contents_answers(
                content_ids=[shows for shows in split.shows.values() if isinstance(shows, int)]
            )
            if NOTHING in split.shows.values():
                table.contents[NOTHING_ID] = None
    table.unknown = (unknown_content, unknown_mask)
    if table.unknown != (None, 0):
        # The newcomers' answer is for visitors without a profile: every profiled visitor the
        # table would otherwise leave out gets a row of their own (the default, no rules).
        profiled = profiles_matching(client_id=campaign.client_id, condition=Q())
        for visitor_id in profiled.values_list("visitor_id", flat=True).iterator(chunk_size=5000):
            if visitor_id not in table.visitors:
                table.masks.setdefault(visitor_id, 0)
    table.overlaps = [
        {
            "winner": _attachment_label(attachments[winner]),
            "other": _attachment_label(attachments[other]),
            "visitors": count,
        }
        for (winner, other), count in sorted(overlaps.items())
    ]
    # A visitor joined to another's profile (same email) gets what that profile gets.
    for alias, canonical in visitor_links(client_id=campaign.client_id).items():
        if canonical in table.visitors:
            table.visitors[alias] = table.visitors[canonical]
        if canonical in table.masks:
            table.masks[alias] = table.masks[canonical]
    return table


def _takes_a_newcomer(rule: dict, now: datetime, idle: timedelta) -> bool:
    """Whether a segment takes a visitor with no history (one the tables do not know yet)."""
    try:
        return rule_matches(rule, newcomer_profile(now=now), now=now, idle=idle)
    except TypeError:
        # A comparison with a date the newcomer lacks: false, as NULL compares in SQL.
        return False


# The content id of "show nothing" in a table (an A/B group or holdout that sees nothing).
NOTHING_ID = 0


def _attachment_label(attachment) -> str:
    return f"{attachment.segment.name} → {attachment.content.name} (priority {attachment.priority})"


def table_build(*, campaign_id: int, publish: bool = True) -> TableVersion:
    """Build the campaign's next table version, with its diff against the one serving, and
    publish it (unless `publish` is false: a preview to publish by hand, or the serving version
    is pinned by a rollback). On failure the serving version stays.

    Idempotent: when the table comes out as the one serving (or as the newest preview), no
    version is added.
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
        preview = (
            TableVersion.objects.filter(campaign=campaign, status=TableVersion.Status.READY)
            .order_by("-number")
            .first()
        )
        is_pinned = serving is not None and serving.is_pinned
        waits = not publish or is_pinned
        if waits and preview is not None and preview.checksum == table.checksum:
            version.delete()
            return preview
        table_store(
            campaign_id=campaign.pk,
            version=number,
            contents=table.contents,
            visitors=table.visitors,
            rules=table.rules,
            masks=table.masks,
            unknown=table.unknown,
        )
        _describe(version, table, campaign=campaign, serving=serving)
        for experiment_id, groups in table.assignments.items():
            assignments_record(
                client_id=campaign.client_id, experiment_id=experiment_id, groups=groups
            )
        if waits or not _publish(version):
            if version.status != TableVersion.Status.SUPERSEDED:
                version.status = TableVersion.Status.READY
            version.save()
    except Exception as error:
        logger.exception("table build of campaign %s failed", campaign.pk)
        version.status = TableVersion.Status.FAILED
        version.error = f"{type(error).__name__}: {error}"
        version.finished_at = timezone.now()
        version.published_at = None
        version.is_stored = False
        try:
            table_discard(campaign_id=campaign.pk, version=number)
        except Exception:  # the store may be what failed; the row says it is not stored
            logger.warning("could not discard table %s v%s", campaign.pk, number)
        version.save(update_fields=["status", "error", "finished_at", "published_at", "is_stored"])
        return version
    _prune(campaign_id=campaign.pk)
    return version


def _describe(version: TableVersion, table: TableContent, *, campaign, serving) -> None:
    """The version's counts, timings and diff against the serving version (not saved)."""
    names = {ident: answer["name"] for ident, answer in table.contents.items() if answer}
    names[NOTHING_ID] = "nothing"
    version.visitor_count = len(table.visitors)
    version.segment_counts = table.segment_counts
    version.segment_seconds = table.segment_seconds
    version.overlaps = table.overlaps
    version.content_counts = {
        names[ident]: count for ident, count in Counter(table.visitors.values()).items()
    }
    version.checksum = table.checksum
    version.finished_at = timezone.now()
    if serving is not None:
        old = table_read(campaign_id=campaign.pk, version=serving.number)
        if old is not None:
            version.diff = table_diff(
                old_visitors=old.visitors.to_dict(),
                new_visitors=table.visitors,
                names={**_names(old.contents), **names},
                default=campaign.default_content.name if campaign.default_content else None,
            )
            version.diff_against = serving.number


def _names(contents: dict[int, dict | None]) -> dict[int, str]:
    return {ident: answer["name"] for ident, answer in contents.items() if answer}


DEFAULT_LABEL = "the default"


def table_diff(
    *,
    old_visitors: dict[str, int],
    new_visitors: dict[str, int],
    names: dict[int, str],
    default: str | None,
) -> list[dict]:
    """How many visitors move from which content to which between two tables: a visitor
    missing from a table gets the campaign's default there. Most moved first."""
    moves: Counter[tuple[str, str]] = Counter()
    fallback = default or DEFAULT_LABEL
    for visitor_id in old_visitors.keys() | new_visitors.keys():
        before, after = old_visitors.get(visitor_id), new_visitors.get(visitor_id)
        if before != after:
            moves[
                (
                    names.get(before, fallback) if before is not None else fallback,
                    names.get(after, fallback) if after is not None else fallback,
                )
            ] += 1
    return [
        {"from": source, "to": target, "visitors": count}
        for (source, target), count in sorted(moves.items(), key=lambda item: (-item[1], item[0]))
        if source != target
    ]


def _publish(version: TableVersion, *, by_hand: bool = False) -> bool:
    """Make the version the one serving its campaign, atomically (one manifest write).

    An automatic build never replaces a newer published version; by hand (publishing a preview,
    rolling back) any stored version can be published, and one older than the newest built is
    pinned. Returns whether it was published.
    """
    with transaction.atomic():
        # Manifests of one client are written one at a time, each from committed state,
        # so two campaigns publishing at once cannot undo each other's switch.
        Client.objects.select_for_update().filter(pk=version.client_id).first()
        published = TableVersion.objects.filter(
            campaign_id=version.campaign_id, status=TableVersion.Status.PUBLISHED
        )
        if not by_hand and published.filter(number__gt=version.number).exists():
            # A build that started later has published already; ours is older news.
            version.status = TableVersion.Status.SUPERSEDED
            version.save()
            return False
        if not by_hand and published.filter(is_pinned=True).exists():
            # Rolled back while we built: the caller keeps ours as a preview.
            return False
        # A rollback: published by hand while a newer built version exists.
        newest = (
            TableVersion.objects.filter(
                campaign_id=version.campaign_id,
                status__in=[
                    TableVersion.Status.READY,
                    TableVersion.Status.PUBLISHED,
                    TableVersion.Status.SUPERSEDED,
                ],
            )
            .exclude(pk=version.pk)
            .aggregate(Max("number"))["number__max"]
        )
        published.exclude(pk=version.pk).update(
            status=TableVersion.Status.SUPERSEDED, is_pinned=False
        )
        version.status = TableVersion.Status.PUBLISHED
        version.published_at = timezone.now()
        version.is_pinned = by_hand and version.number < (newest or 0)
        version.save()
        manifest_publish(client_id=version.client_id)
    return True


class PublishError(ValueError):
    pass


def table_publish(*, version: TableVersion) -> TableVersion:
    """Publish a built version by hand: a preview, or an older one (a rollback, which pins it:
    automatic builds then wait as previews until someone publishes again)."""
    version.refresh_from_db()
    if version.status not in (TableVersion.Status.READY, TableVersion.Status.SUPERSEDED):
        raise PublishError(f"version {version.number} is {version.get_status_display().lower()}")
    if not version.is_stored or not table_exists(
        campaign_id=version.campaign_id, version=version.number
    ):
        raise PublishError(f"version {version.number} is no longer in the table store")
    _publish(version, by_hand=True)
    return version


def _prune(*, campaign_id: int) -> None:
    """Drop stored tables beyond the newest TABLE_VERSIONS_KEPT (kept for rollback)."""
    old = TableVersion.objects.filter(
        campaign_id=campaign_id,
        is_stored=True,
        status__in=[TableVersion.Status.READY, TableVersion.Status.SUPERSEDED],
    ).order_by("-number")[settings.TABLE_VERSIONS_KEPT :]
    for version in old:
        table_discard(campaign_id=campaign_id, version=version.number)
        TableVersion.objects.filter(pk=version.pk).update(is_stored=False)


def tables_build(*, client_id: int | None = None) -> list[TableVersion]:
    """Build every active campaign's table (of one client, or of all clients), and publish
    every client's manifest, so that deactivated clients and campaigns stop serving."""
    versions = [
        table_build(campaign_id=campaign.pk) for campaign in campaigns_active(client_id=client_id)
    ]
    for client in clients_all(client_id=client_id):
        manifest_publish(client_id=client.pk)
    return versions


def visitor_explain(*, campaign_id: int, visitor_id: str, client_id: int | None) -> dict:
    """Why a visitor gets what they get in a campaign (B1): the serving version and what its
    table holds for them, and each attachment in priority order with whether the visitor's
    profile is in its segment now (the next build's answer, if anything changed since).

    Only a campaign of `client_id` (None: any, for superusers); raises Campaign.DoesNotExist.
    """
    campaign = campaign_get(campaign_id=campaign_id)
    if client_id is not None and campaign.client_id != client_id:
        raise type(campaign).DoesNotExist(campaign_id)
    canonical = canonical_of(client_id=campaign.client_id, visitor_id=visitor_id)
    # What this node serves: its in-memory copy of the published table (no table read).
    view = local_tables().client(campaign.client.public_key)
    placement = view.placements.get(campaign.placement.key) if view is not None else None
    table = placement.table if placement is not None else None
    serving = (
        TableVersion.objects.filter(campaign=campaign, number=table.version).first()
        if table is not None
        else None
    )
    default = _content(campaign.default_content)
    # Without request facts: what the visitor gets when no request-time condition holds.
    content_id = None
    served = default
    request_rules = []
    if table is not None:
        content_id, mask = table.row(visitor_id)
        if content_id is not None:
            served = _content_answer(table.contents.get(content_id))
        request_rules = [
            {
                "content": _content_answer(table.contents.get(rule.content_id)),
                "conditions": rule.conditions,
            }
            for rule in table.rules_in(mask)
        ]
    now = timezone.now()
    attachments: list[dict] = []
    winner: dict | None = None
    for attachment in attachments_for_campaign(campaign_id=campaign.pk):
        condition = rule_condition(
            rule=attachment.segment.rule, client_id=campaign.client_id, now=now
        )
        matches = (
            profiles_matching(client_id=campaign.client_id, condition=condition)
            .filter(visitor_id=canonical)
            .exists()
        )
        entry = {
            "priority": attachment.priority,
            "segment": attachment.segment.name,
            "content": _content(attachment.content),
            "conditions": attachment.conditions,
            "matches_now": matches,
        }
        attachments.append(entry)
        if matches and winner is None and not attachment.conditions:
            winner = entry
    next_content = winner["content"] if winner else default
    return {
        "campaign": {"id": campaign.pk, "key": campaign.key, "name": campaign.name},
        "visitor": visitor_id,
        "profile_of": canonical,
        "version": (
            {
                "number": serving.number,
                "published_at": serving.published_at,
                "is_pinned": serving.is_pinned,
            }
            if serving
            else None
        ),
        "served": served,
        "served_by": "table" if content_id is not None else "default",
        # Attachments with request-time conditions that would beat `served` when they hold.
        "request_rules": request_rules,
        "attachments": attachments,
        "winner_now": winner,
        "is_current": _id(next_content) == _id(served),
    }


def _content_answer(answer: dict | None) -> dict | None:
    return {"id": answer["id"], "name": answer["name"]} if answer else None


def _content(content) -> dict | None:
    return {"id": content.pk, "name": content.name} if content is not None else None


def _id(content: dict | None) -> int | None:
    return content["id"] if content is not None else None
