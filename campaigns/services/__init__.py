"""Content with its approval and audit log, and A/B tests (C1): starting, reallocating and
ending them, and their results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from campaigns.bucketing import BUCKETS, HOLDOUT, allocation_update, group_of
from campaigns.models import Assignment, Content, ContentChange, Experiment, ExperimentGroup
from campaigns.statistics import (
    SRM_P,
    Sample,
    conversion_compare,
    revenue_compare,
    sample_ratio_check,
)


class ExperimentError(ValueError):
    pass


# Content that runs in the client's pages: it needs an admin's approval, and is audited.
CODE_TYPES = {Content.Type.SCRIPT, Content.Type.HTML}
CODE_FIELDS = ("name", "type", "url", "html")


def content_snapshot(content: Content) -> dict:
    return {field: getattr(content, field) for field in CODE_FIELDS}


@transaction.atomic
def content_save(*, content: Content, by: str, is_admin: bool) -> Content:
    """Save content. Script or HTML saved by anyone but a client admin waits for approval;
    every script or HTML change lands in the audit log with its code before and after."""
    old = Content.objects.filter(pk=content.pk).first() if content.pk else None
    before = content_snapshot(old) if old is not None else {}
    after = content_snapshot(content)
    is_code = content.type in CODE_TYPES or before.get("type") in CODE_TYPES
    if content.type not in CODE_TYPES:
        content.is_approved = True
    elif before != after or old is None:
        content.is_approved = is_admin
    content.save()
    if is_code and (old is None or before != after):
        ContentChange.objects.create(
            client_id=content.client_id,
            content=content,
            content_name=content.name,
            action=ContentChange.Action.CREATED if old is None else ContentChange.Action.CHANGED,
            by=by,
            before=before,
            after=after,
            is_approved=content.is_approved,
        )
    return content


@transaction.atomic
def content_approve(*, content: Content, by: str) -> bool:
    """Approve script or HTML content as it is now; False when there was nothing to approve."""
    if content.is_approved:
        return False
    content.is_approved = True
    content.save(update_fields=["is_approved"])
    snapshot = content_snapshot(content)
    ContentChange.objects.create(
        client_id=content.client_id,
        content=content,
        content_name=content.name,
        action=ContentChange.Action.APPROVED,
        by=by,
        before=snapshot,
        after=snapshot,
        is_approved=True,
    )
    return True


@transaction.atomic
def content_delete(*, content: Content, by: str) -> None:
    if content.type in CODE_TYPES:
        ContentChange.objects.create(
            client_id=content.client_id,
            content=None,
            content_name=content.name,
            action=ContentChange.Action.DELETED,
            by=by,
            before=content_snapshot(content),
            after={},
            is_approved=False,
        )
    content.delete()


def _shares(experiment: Experiment) -> dict[str, int]:
    groups = list(experiment.groups.all())
    controls = [group for group in groups if group.is_control]
    if len(controls) != 1:
        raise ExperimentError("a test needs exactly one control group")
    if len(groups) < 2:
        raise ExperimentError("a test needs a control group and at least one test group")
    for group in groups:
        if group.shows == ExperimentGroup.Shows.CONTENT and group.content_id is None:
            raise ExperimentError(f"group {group.key} shows content but has none chosen")
    shares = {HOLDOUT: experiment.holdout_share} if experiment.holdout_share else {}
    shares |= {group.key: group.share for group in groups}
    if sum(shares.values()) != BUCKETS:
        raise ExperimentError(
            f"the groups' shares and the holdout add up to {sum(shares.values())} basis points, "
            f"not {BUCKETS}"
        )
    return shares


@transaction.atomic
def experiment_start(*, experiment: Experiment) -> Experiment:
    """Start a draft test: its allocation is fixed from its groups' shares, and the next table
    build splits the segment's visitors among the groups."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Experiment.Status.DRAFT:
        raise ExperimentError(f"the test is {experiment.get_status_display().lower()}")
    if Experiment.objects.filter(
        attachment_id=experiment.attachment_id, status=Experiment.Status.RUNNING
    ).exists():
        raise ExperimentError("another test of this segment in this campaign is running")
    if experiment.attachment.conditions:
        # A test splits a segment's profiles; conditions decided per request would bias it.
        raise ExperimentError("an A/B test needs an attachment without request-time conditions")
    experiment.allocation = allocation_update(None, _shares(experiment))
    experiment.status = Experiment.Status.RUNNING
    experiment.started_at = timezone.now()
    experiment.save(update_fields=["allocation", "status", "started_at"])
    return experiment


@transaction.atomic
def experiment_reallocate(*, experiment: Experiment) -> int:
    """After a running test's shares changed: move as few buckets as the new shares need.
    Returns how many buckets moved."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    before = list(experiment.allocation)
    experiment.allocation = allocation_update(before, _shares(experiment))
    experiment.save(update_fields=["allocation"])
    return sum(1 for old, new in zip(before, experiment.allocation, strict=True) if old != new)


@transaction.atomic
def experiment_end(*, experiment: Experiment, winner: ExperimentGroup) -> Experiment:
    """End a running test with a winner: its content becomes the segment's content in the
    campaign from the next build on."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if experiment.status != Experiment.Status.RUNNING:
        raise ExperimentError("only a running test can be ended")
    if winner.experiment_id != experiment.pk:
        raise ExperimentError("the winner must be a group of this test")
    if winner.shows != ExperimentGroup.Shows.CONTENT or winner.content is None:
        raise ExperimentError(
            "the winner must show content: to show the default or nothing, remove the "
            "segment's attachment instead"
        )
    attachment = experiment.attachment
    attachment.content = winner.content
    attachment.save(update_fields=["content"])
    experiment.winner = winner
    experiment.status = Experiment.Status.ENDED
    experiment.ended_at = timezone.now()
    experiment.save(update_fields=["winner", "status", "ended_at"])
    return experiment


@dataclass(frozen=True)
class Split:
    """A running test as the table build applies it: group of a visitor, and what it shows
    (a content id, or None for the campaign's default, or NOTHING)."""

    experiment_id: int
    salt: str
    allocation: list[str]
    shows: dict[str, int | str | None]

    def content_of(self, visitor_id: str) -> tuple[str, int | str | None]:
        group = group_of(self.allocation, self.salt, visitor_id)
        return group, self.shows[group]


NOTHING = "nothing"


def experiment_splits(*, attachment_ids: list[int]) -> dict[int, Split]:
    """attachment id -> its running test, as the build applies it."""
    splits = {}
    running = Experiment.objects.filter(
        attachment_id__in=attachment_ids, status=Experiment.Status.RUNNING
    ).prefetch_related("groups")
    for experiment in running:
        shows: dict[str, int | str | None] = {HOLDOUT: NOTHING}
        for group in experiment.groups.all():
            shows[group.key] = {
                ExperimentGroup.Shows.CONTENT: group.content_id,
                ExperimentGroup.Shows.DEFAULT: None,
                ExperimentGroup.Shows.NOTHING: NOTHING,
            }[ExperimentGroup.Shows(group.shows)]
        splits[experiment.attachment_id] = Split(
            experiment.pk, experiment.salt, experiment.allocation, shows
        )
    return splits


# Assignments are written in batches of this many rows (about 200 bytes each).
ASSIGNMENT_BATCH = 5_000


def assignments_record(*, client_id: int, experiment_id: int, groups: dict[str, str]) -> None:
    """Record (or move, after a change of shares) the visitors' groups of a build."""
    now = timezone.now()
    items = list(groups.items())
    for start in range(0, len(items), ASSIGNMENT_BATCH):
        Assignment.objects.bulk_create(
            [
                Assignment(
                    client_id=client_id,
                    experiment_id=experiment_id,
                    visitor_id=visitor_id,
                    group_key=group,
                    assigned_at=now,
                )
                for visitor_id, group in items[start : start + ASSIGNMENT_BATCH]
            ],
            update_conflicts=True,
            unique_fields=["experiment", "visitor_id"],
            update_fields=["group_key"],
        )


# Per assigned visitor, in the period: deliveries of the campaign (impressions), clicks through
# its links, and orders after their first delivery (an order id counts once, at its highest
# value).
_RESULTS_SQL = """
SELECT assignment.group_key, assignment.visitor_id, shown.impressions,
    coalesce(clicked.clicks, 0), coalesce(bought.orders, 0), coalesce(bought.revenue, 0)
FROM campaigns_assignment AS assignment
JOIN (
    SELECT visitor_id, count(*) AS impressions, min(occurred_at) AS first_seen_at
    FROM aggregation_event
    WHERE client_id = %s AND type = 'delivery' AND campaign_key = %s
        AND occurred_at >= %s AND occurred_at < %s
    GROUP BY visitor_id
) AS shown ON shown.visitor_id = assignment.visitor_id
LEFT JOIN (
    SELECT visitor_id, count(*) AS clicks
    FROM aggregation_event
    WHERE client_id = %s AND type = 'click' AND campaign_key = %s
        AND occurred_at >= %s AND occurred_at < %s
    GROUP BY visitor_id
) AS clicked ON clicked.visitor_id = assignment.visitor_id
LEFT JOIN (
    SELECT purchase.visitor_id, count(*) AS orders, sum(purchase.value) AS revenue
    FROM (
        SELECT event.visitor_id, max(coalesce(event.value, 0)) AS value
        FROM aggregation_event AS event
        JOIN (
            SELECT visitor_id, min(occurred_at) AS first_seen_at FROM aggregation_event
            WHERE client_id = %s AND type = 'delivery' AND campaign_key = %s
                AND occurred_at >= %s AND occurred_at < %s
            GROUP BY visitor_id
        ) AS exposed ON exposed.visitor_id = event.visitor_id
        WHERE event.client_id = %s AND event.type = 'purchase'
            AND event.occurred_at >= exposed.first_seen_at AND event.occurred_at < %s
        GROUP BY event.visitor_id,
            CASE WHEN event.order_id = '' THEN '#' || event.event_id ELSE event.order_id END
    ) AS purchase
    GROUP BY purchase.visitor_id
) AS bought ON bought.visitor_id = assignment.visitor_id
WHERE assignment.experiment_id = %s
"""


def experiment_results(*, experiment: Experiment, first: date, last: date) -> dict:
    """Per group, over whole UTC days: visitors assigned and shown the campaign, impressions,
    conversions (visitors who bought after their first impression), revenue; against the
    control, the lift of conversion rate and of revenue per visitor with confidence intervals
    and p-values; the sample-ratio check; and the winner to suggest, if any yet."""
    start = datetime.combine(first, time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    adapt = connection.ops.adapt_datetimefield_value
    client_id = experiment.client_id
    key = experiment.attachment.campaign.key
    window: list[Any] = [client_id, key, adapt(start), adapt(end)]
    groups = {group.key: group for group in experiment.groups.all()}
    rows: dict[str, dict] = {
        group: {"visitors": 0, "impressions": 0, "clicks": 0, "conversions": 0, "revenues": []}
        for group in [*groups, HOLDOUT]
    }
    with connection.cursor() as cursor:
        cursor.execute(
            _RESULTS_SQL, [*window, *window, *window, client_id, adapt(end), experiment.pk]
        )
        for group, _, impressions, clicks, orders, revenue in cursor:
            if group not in rows:
                continue  # a group removed since
            row = rows[group]
            row["visitors"] += 1
            row["impressions"] += impressions
            row["clicks"] += clicks
            row["conversions"] += orders > 0
            row["revenues"].append(float(revenue))
    control_key = next(key for key, group in groups.items() if group.is_control)
    samples = {
        group: Sample(row["visitors"], row["conversions"], row["revenues"])
        for group, row in rows.items()
    }
    table = []
    for group_key, group in sorted(groups.items(), key=lambda item: not item[1].is_control):
        sample = samples[group_key]
        table.append(
            {
                "key": group_key,
                "name": group.name,
                "is_control": group.is_control,
                "share": group.share,
                "visitors": sample.visitors,
                "impressions": rows[group_key]["impressions"],
                "clicks": rows[group_key]["clicks"],
                "click_through_rate": (
                    rows[group_key]["clicks"] / rows[group_key]["impressions"]
                    if rows[group_key]["impressions"]
                    else None
                ),
                "conversions": sample.conversions,
                "conversion_rate": sample.conversion_rate,
                "revenue": Decimal(str(round(sum(sample.revenues), 2))),
                "revenue_per_visitor": sample.revenue_per_visitor,
                "conversion": None
                if group.is_control
                else conversion_compare(samples[control_key], sample),
                "revenue_lift": None
                if group.is_control
                else revenue_compare(samples[control_key], sample),
            }
        )
    shares = {group.key: group.share for group in groups.values()}
    if experiment.holdout_share:
        shares[HOLDOUT] = experiment.holdout_share
    srm_p = sample_ratio_check([samples[group].visitors for group in shares], list(shares.values()))
    days_run = (timezone.now() - experiment.started_at).days if experiment.started_at else 0
    is_long_enough = days_run >= experiment.minimum_days
    winners = [
        row
        for row in table
        if row["conversion"] is not None
        and row["conversion"].is_significant
        and row["conversion"].difference > 0
    ]
    suggestion = None
    if is_long_enough and winners and not (srm_p is not None and srm_p < SRM_P):
        suggestion = max(winners, key=lambda row: row["conversion"].difference)["key"]
    return {
        "first": first,
        "last": last,
        "groups": table,
        "holdout": _holdout(samples) if experiment.holdout_share else None,
        "srm_p": srm_p,
        "is_sample_ratio_mismatch": srm_p is not None and srm_p < SRM_P,
        "days_run": days_run,
        "is_long_enough": is_long_enough,
        "suggested_winner": suggestion,
    }


def _holdout(samples: dict[str, Sample]) -> dict:
    """The holdout against everyone the campaign reached (every group together): the lift of
    the whole campaign."""
    holdout = samples[HOLDOUT]
    reached = [sample for key, sample in samples.items() if key != HOLDOUT]
    everyone = Sample(
        sum(sample.visitors for sample in reached),
        sum(sample.conversions for sample in reached),
        [revenue for sample in reached for revenue in sample.revenues],
    )
    return {
        "visitors": holdout.visitors,
        "conversions": holdout.conversions,
        "conversion_rate": holdout.conversion_rate,
        "revenue_per_visitor": holdout.revenue_per_visitor,
        "campaign_conversion": conversion_compare(holdout, everyone),
        "campaign_revenue": revenue_compare(holdout, everyone),
    }
