"""A/B tests in the table build and their results (C1): the golf shop's test of discounts."""

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from aggregation.models import Event, Profile
from campaigns.bucketing import bucket_of
from campaigns.models import Assignment, Experiment, ExperimentGroup
from campaigns.services import (
    ExperimentError,
    experiment_end,
    experiment_reallocate,
    experiment_results,
    experiment_start,
)
from delivery.tables import local_tables
from segmentation.services import table_build
from tests.factories import AttachmentFactory, CampaignFactory, ContentFactory, EventFactory

pytestmark = pytest.mark.django_db

REPEAT = {"field": "purchases", "op": "gte", "value": 1}


@pytest.fixture
def golf():
    """The patent's golf shop: repeat visitors see a banner; a test of three discounts."""
    campaign = CampaignFactory(key="discounts", default_content__name="welcome")
    client = campaign.client
    attachment = AttachmentFactory(
        campaign=campaign, segment__client=client, segment__rule=REPEAT, content__name="no offer"
    )
    experiment = Experiment.objects.create(
        client=client, attachment=attachment, name="Discounts", salt="golf"
    )
    for key, shows, content in [
        ("control", "default", None),
        ("ten-off", "content", "10% off"),
        ("twenty-off", "content", "20% off"),
        ("25-dollars", "content", "$25 off"),
    ]:
        ExperimentGroup.objects.create(
            client=client,
            experiment=experiment,
            key=key,
            name=key,
            is_control=key == "control",
            share=2500,
            shows=shows,
            content=ContentFactory(client=client, name=content) if content else None,
        )
    return experiment


def _repeat_visitors(client, count):
    Profile.objects.bulk_create(
        (
            Profile(
                client=client,
                visitor_id=f"golfer-{index}",
                purchases=2,
                visits=3,
                first_seen_at=timezone.now(),
                last_seen_at=timezone.now(),
            )
            for index in range(count)
        ),
        batch_size=5000,
    )
    return [f"golfer-{index}" for index in range(count)]


def _served(campaign, visitor_id):
    view = local_tables().client(campaign.client.public_key)
    table = view.placements[campaign.placement.key].table
    content_id = table.visitors.get(visitor_id)
    if content_id is None:
        return "default"
    answer = table.contents[content_id]
    return answer["name"] if answer else "nothing"


def test_the_golf_shops_100000_repeat_visitors_split_stay_put_and_move_few(golf):
    campaign = golf.attachment.campaign
    visitors = _repeat_visitors(campaign.client, 100_000)
    experiment_start(experiment=golf)

    first = table_build(campaign_id=campaign.pk)
    groups = dict(Assignment.objects.filter(experiment=golf).values_list("visitor_id", "group_key"))

    sizes = Counter(groups.values())
    assert len(groups) == 100_000
    assert all(abs(size - 25_000) <= 1_000 for size in sizes.values()), sizes
    shown = {group: _served(campaign, visitor) for visitor, group in list(groups.items())[:2000]}
    assert shown == {
        "control": "default",
        "ten-off": "10% off",
        "twenty-off": "20% off",
        "25-dollars": "$25 off",
    }
    # Rebuilding changes nobody's group (the build comes out the same: no new version).
    again = table_build(campaign_id=campaign.pk)
    assert again.pk == first.pk
    assert dict(Assignment.objects.values_list("visitor_id", "group_key")) == groups

    golf.groups.filter(key="control").update(share=4000)
    golf.groups.exclude(key="control").update(share=2000)
    moved = experiment_reallocate(experiment=golf)
    table_build(campaign_id=campaign.pk)
    after = dict(Assignment.objects.values_list("visitor_id", "group_key"))

    golf.refresh_from_db()
    moved_buckets = {b for b in range(10_000) if golf.allocation[b] == "control"} - {
        b
        for b in range(10_000)
        if b < 2500  # control's first 2,500 buckets stayed
    }
    changed = {visitor for visitor in visitors if after[visitor] != groups[visitor]}
    assert moved == 1500
    assert changed == {v for v in visitors if bucket_of("golf", v) in moved_buckets}
    assert {after[visitor] for visitor in changed} == {"control"}


def test_results_count_what_each_group_did_after_seeing_the_campaign(golf):
    campaign = golf.attachment.campaign
    client = campaign.client
    visitors = _repeat_visitors(client, 400)
    experiment_start(experiment=golf)
    table_build(campaign_id=campaign.pk)
    groups = dict(Assignment.objects.values_list("visitor_id", "group_key"))
    shown_at = datetime(2026, 10, 5, 12, tzinfo=UTC)
    events = []
    for index, visitor in enumerate(visitors):
        events.append(_event(client, visitor, "delivery", shown_at, campaign_key="discounts"))
        if index % 4 == 0:
            events.append(_event(client, visitor, "click", shown_at, campaign_key="discounts"))
        bought = (groups[visitor] == "twenty-off" and index % 2 == 0) or index % 10 == 0
        if bought:
            events.append(_event(client, visitor, "purchase", shown_at + timedelta(hours=1),
                                 order_id=f"o{index}", value=Decimal("50.00")))  # fmt: skip
            # The same order sent twice counts once; a purchase before seeing it not at all.
            events.append(_event(client, visitor, "purchase", shown_at + timedelta(hours=2),
                                 order_id=f"o{index}", value=Decimal("50.00")))  # fmt: skip
            events.append(_event(client, visitor, "purchase", shown_at - timedelta(days=1),
                                 order_id=f"early{index}", value=Decimal("9.00")))  # fmt: skip
    Event.objects.bulk_create(events)

    results = experiment_results(experiment=golf, first=date(2026, 10, 1), last=date(2026, 10, 31))

    rows = {row["key"]: row for row in results["groups"]}
    for key, row in rows.items():
        members = [v for v in visitors if groups[v] == key]
        buyers = [
            v for v in members
            if (key == "twenty-off" and visitors.index(v) % 2 == 0) or visitors.index(v) % 10 == 0
        ]  # fmt: skip
        clickers = [v for v in members if visitors.index(v) % 4 == 0]
        assert (row["visitors"], row["impressions"]) == (len(members), len(members))
        assert (row["clicks"], row["click_through_rate"]) == (
            len(clickers),
            len(clickers) / len(members),
        )
        assert (row["conversions"], row["revenue"]) == (len(buyers), Decimal(50 * len(buyers)))
    assert rows["control"]["conversion"] is None
    assert rows["twenty-off"]["conversion"].is_significant
    assert not rows["ten-off"]["conversion"].is_significant
    assert results["is_sample_ratio_mismatch"] is False
    # Started just now: too early to suggest a winner, however clear.
    assert (results["is_long_enough"], results["suggested_winner"]) == (False, None)
    Experiment.objects.filter(pk=golf.pk).update(started_at=timezone.now() - timedelta(days=15))
    golf.refresh_from_db()
    later = experiment_results(experiment=golf, first=date(2026, 10, 1), last=date(2026, 10, 31))
    assert later["suggested_winner"] == "twenty-off"


def test_the_api_gives_the_results_with_their_comparisons_as_numbers(golf):
    from rest_framework.test import APIClient

    from coremetrics.models import Membership
    from tests.factories import MembershipFactory

    campaign = golf.attachment.campaign
    visitors = _repeat_visitors(campaign.client, 200)
    experiment_start(experiment=golf)
    table_build(campaign_id=campaign.pk)
    shown_at = datetime(2026, 10, 5, 12, tzinfo=UTC)
    client = campaign.client
    Event.objects.bulk_create(
        [_event(client, v, "delivery", shown_at, campaign_key="discounts") for v in visitors]
        + [
            _event(client, v, "purchase", shown_at + timedelta(hours=1), order_id=v,
                   value=Decimal("50.00"))
            for v in visitors[::3]
        ]
    )  # fmt: skip
    api = APIClient()
    api.force_authenticate(
        MembershipFactory(client=campaign.client, role=Membership.Role.VIEWER).user
    )

    response = api.get(
        f"/api/v1/experiments/{golf.pk}/results", {"first": "2026-10-01", "last": "2026-10-31"}
    )

    assert response.status_code == 200, response.content
    expected = experiment_results(experiment=golf, first=date(2026, 10, 1), last=date(2026, 10, 31))
    rows = {row["key"]: row for row in response.json()["groups"]}
    assert any(row["conversion"] is not None for row in expected["groups"])
    for row in expected["groups"]:
        comparison = row["conversion"]
        given = rows[row["key"]]["conversion"]
        if comparison is None:
            assert given is None
        else:
            assert given["p_value"] == pytest.approx(comparison.p_value)
            assert given["is_significant"] == comparison.is_significant
        assert rows[row["key"]]["revenue"] == float(row["revenue"])


def test_ending_with_a_winner_gives_its_content_to_the_whole_segment(golf):
    campaign = golf.attachment.campaign
    visitors = _repeat_visitors(campaign.client, 50)
    experiment_start(experiment=golf)
    table_build(campaign_id=campaign.pk)
    winner = golf.groups.get(key="twenty-off")

    with pytest.raises(ExperimentError) as refused:
        experiment_end(experiment=golf, winner=golf.groups.get(key="control"))
    experiment_end(experiment=golf, winner=winner)
    table_build(campaign_id=campaign.pk)

    assert "the winner must show content" in str(refused.value)
    assert {_served(campaign, visitor) for visitor in visitors} == {"20% off"}
    golf.refresh_from_db()
    assert (golf.status, golf.winner_id) == ("ended", winner.pk)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"share": 3000}, "add up to 10500 basis points, not 10000"),
        ({"is_control": False}, "exactly one control group"),
    ],
)
def test_a_test_with_wrong_groups_does_not_start(golf, change, error):
    golf.groups.filter(key="control").update(**change)

    with pytest.raises(ExperimentError) as raised:
        experiment_start(experiment=golf)

    assert error in str(raised.value)
    golf.refresh_from_db()
    assert (golf.status, golf.allocation) == ("draft", [])


def test_a_holdout_sees_nothing(golf):
    campaign = golf.attachment.campaign
    visitors = _repeat_visitors(campaign.client, 2000)
    golf.holdout_share = 1000
    golf.save()
    golf.groups.filter(key="control").update(share=1500)
    experiment_start(experiment=golf)

    table_build(campaign_id=campaign.pk)

    groups = dict(Assignment.objects.values_list("visitor_id", "group_key"))
    held = [visitor for visitor in visitors if groups[visitor] == "holdout"]
    assert 150 <= len(held) <= 250
    assert {_served(campaign, visitor) for visitor in held} == {"nothing"}
    # The whole campaign against its holdout: a fifth of the reached bought, nobody held out.
    moment = datetime(2026, 10, 5, 12, tzinfo=UTC)
    events = [
        _event(campaign.client, v, "delivery", moment, campaign_key="discounts") for v in visitors
    ]
    reached = [v for v in visitors if groups[v] != "holdout"]
    events += [
        _event(campaign.client, v, "purchase", moment + timedelta(hours=1), order_id=v, value=10)
        for v in reached[::5]
    ]
    Event.objects.bulk_create(events)
    results = experiment_results(experiment=golf, first=date(2026, 10, 1), last=date(2026, 10, 9))
    holdout = results["holdout"]
    assert (holdout["visitors"], holdout["conversions"]) == (len(held), 0)
    assert holdout["campaign_conversion"].difference == pytest.approx(
        len(reached[::5]) / len(reached)
    )
    assert holdout["campaign_conversion"].is_significant


def _event(client, visitor_id, kind, moment, **fields):
    return EventFactory.build(
        client=client, visitor_id=visitor_id, type=kind, occurred_at=moment, received_at=moment,
        **fields,
    )  # fmt: skip
