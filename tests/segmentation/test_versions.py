"""Versioned lookup tables (B1): diff before publishing, publish and roll back by hand, the
build history, and why a visitor gets what they get."""

import pytest
from django.test import override_settings
from django.urls import reverse

from segmentation.services import PublishError, table_build, table_diff, table_publish
from tests.factories import (
    AttachmentFactory,
    CampaignFactory,
    MembershipFactory,
    ProfileFactory,
    VisitorLinkFactory,
)
from tests.segmentation.test_table_build import _served

pytestmark = pytest.mark.django_db

BOUGHT = {"field": "purchases", "op": "gte", "value": 1}
RETURNING = {"field": "visits", "op": "gt", "value": 1}


@pytest.fixture
def campaign():
    campaign = CampaignFactory(default_content__name="welcome")
    AttachmentFactory(campaign=campaign, segment__rule=BOUGHT, priority=1, content__name="buyer")
    AttachmentFactory(campaign=campaign, segment__rule=RETURNING, priority=2, content__name="back")
    return campaign


def test_table_diff_counts_who_moves_where():
    moves = table_diff(
        old_visitors={"a": 1, "b": 1, "c": 2, "d": 2},
        new_visitors={"a": 2, "b": 2, "c": 2, "e": 1},
        names={1: "banner A", 2: "banner B"},
        default="welcome",
    )

    assert moves == [
        {"from": "banner A", "to": "banner B", "visitors": 2},
        {"from": "banner B", "to": "welcome", "visitors": 1},
        {"from": "welcome", "to": "banner A", "visitors": 1},
    ]


def test_a_preview_shows_its_diff_and_serves_only_once_published(campaign):
    client = campaign.client
    returning = [ProfileFactory(client=client, visits=2, purchases=0) for _ in range(3)]
    first = table_build(campaign_id=campaign.pk)
    for profile in returning[:2]:
        profile.purchases = 1
        profile.save()

    preview = table_build(campaign_id=campaign.pk, publish=False)
    built = (preview.status, preview.diff_against)
    served_before = _served(campaign, returning[0].visitor_id)
    table_publish(version=preview)

    assert (first.diff_against, first.diff) == (None, [])
    assert built == ("ready", 1)
    assert preview.diff == [{"from": "back", "to": "buyer", "visitors": 2}]
    assert served_before == ("back", "table", 1)
    assert _served(campaign, returning[0].visitor_id) == ("buyer", "table", 2)
    preview.refresh_from_db()
    first.refresh_from_db()
    assert (preview.status, preview.is_pinned, first.status) == ("published", False, "superseded")


def test_a_rollback_pins_the_old_version_until_someone_publishes(campaign):
    client = campaign.client
    visitor = ProfileFactory(client=client, visits=2, purchases=0)
    first = table_build(campaign_id=campaign.pk)
    visitor.purchases = 1
    visitor.save()
    second = table_build(campaign_id=campaign.pk)

    table_publish(version=first)  # the rollback
    first.refresh_from_db()
    visitor.visits, visitor.purchases = 1, 0
    visitor.save()
    waiting = table_build(campaign_id=campaign.pk)  # an automatic build while pinned

    assert (first.status, first.is_pinned) == ("published", True)
    assert waiting.status == "ready"
    assert _served(campaign, visitor.visitor_id) == ("back", "table", 1)
    table_publish(version=waiting)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.is_pinned, second.status) == ("superseded", False, "superseded")
    assert _served(campaign, visitor.visitor_id) == ("welcome", "default", waiting.number)


@override_settings(TABLE_VERSIONS_KEPT=1)
def test_versions_beyond_those_kept_leave_the_store_and_cannot_be_published(campaign):
    visitor = ProfileFactory(client=campaign.client, visits=1, purchases=0)
    versions = []
    for visits in (2, 1, 2):
        visitor.visits = visits
        visitor.save()
        versions.append(table_build(campaign_id=campaign.pk))
    for version in versions:
        version.refresh_from_db()

    assert [version.is_stored for version in versions] == [False, True, True]
    with pytest.raises(PublishError) as raised:
        table_publish(version=versions[0])
    assert str(raised.value) == "version 1 is no longer in the table store"
    with pytest.raises(PublishError):
        table_publish(version=versions[2])  # already serving


def test_the_history_page_shows_moves_and_publishes_for_marketers_only(
    client, campaign, django_user_model
):
    ProfileFactory(client=campaign.client, visits=2, purchases=0)
    table_build(campaign_id=campaign.pk)
    ProfileFactory(client=campaign.client, visits=2, purchases=1)
    ProfileFactory(client=campaign.client, visits=2, purchases=0)
    preview = table_build(campaign_id=campaign.pk, publish=False)
    url = reverse("admin:segmentation_tableversion_change", args=[preview.pk])
    publish = reverse("admin:segmentation-tableversion-publish", args=[preview.pk])
    viewer = MembershipFactory(client=campaign.client, role="viewer").user
    marketer = MembershipFactory(client=campaign.client, role="marketer").user
    outsider = MembershipFactory(role="marketer").user  # another client's

    client.force_login(viewer)
    page = client.get(url).content.decode()
    refused = client.post(publish).status_code
    client.force_login(outsider)
    hidden = client.post(publish).status_code
    client.force_login(marketer)
    published = client.post(publish)

    assert "1 visitors move from welcome to back" in page
    assert "1 visitors move from welcome to buyer" in page
    assert "Publish version" not in page
    assert (refused, hidden, published.status_code) == (403, 403, 302)
    preview.refresh_from_db()
    assert preview.status == "published"


def test_explain_names_the_version_the_segments_and_the_winner(client, campaign):
    both = ProfileFactory(client=campaign.client, visits=3, purchases=1)
    table_build(campaign_id=campaign.pk)
    VisitorLinkFactory(
        client=campaign.client, visitor_id="other-browser", canonical_id=both.visitor_id
    )
    client.force_login(MembershipFactory(client=campaign.client, role="viewer").user)

    api = client.get(
        reverse("segmentation:campaign-explain", args=[campaign.pk]),
        {"visitor": both.visitor_id},
    ).json()
    page = client.get(
        reverse("admin:campaigns-campaign-explain", args=[campaign.pk]),
        {"visitor": "other-browser"},
    ).content.decode()

    assert api["version"]["number"] == 1
    assert (api["served"]["name"], api["served_by"], api["is_current"]) == ("buyer", "table", True)
    assert [(a["priority"], a["matches_now"]) for a in api["attachments"]] == [(1, True), (2, True)]
    assert api["winner_now"]["content"]["name"] == "buyer"
    assert f"joined to {both.visitor_id}" in page
    assert "<td>yes: wins</td>" in page


def test_explain_is_sealed_off_from_other_clients(client, campaign):
    client.force_login(MembershipFactory(role="marketer").user)  # another client's

    api = client.get(reverse("segmentation:campaign-explain", args=[campaign.pk]), {"visitor": "x"})
    page = client.get(reverse("admin:campaigns-campaign-explain", args=[campaign.pk]))
    client.logout()
    anonymous = client.get(
        reverse("segmentation:campaign-explain", args=[campaign.pk]), {"visitor": "x"}
    )

    assert (api.status_code, page.status_code, anonymous.status_code) == (404, 403, 401)


def test_explain_needs_a_visitor(client, campaign, superuser):
    response = client.get(reverse("segmentation:campaign-explain", args=[campaign.pk]))

    assert (response.status_code, response.json()) == (
        400,
        {"visitor": ["This field is required."]},
    )


def test_the_build_counts_visitors_in_several_segments_and_names_the_winner(client, campaign):
    for _ in range(2):
        ProfileFactory(client=campaign.client, visits=3, purchases=1)  # in both segments
    ProfileFactory(client=campaign.client, visits=3, purchases=0)  # returning only
    buyers, returning = (a.segment.name for a in campaign.attachments.order_by("priority"))

    version = table_build(campaign_id=campaign.pk)
    client.force_login(MembershipFactory(client=campaign.client, role="viewer").user)
    page = client.get(reverse("admin:segmentation_tableversion_change", args=[version.pk]))

    assert version.overlaps == [
        {
            "winner": f"{buyers} → buyer (priority 1)",
            "other": f"{returning} → back (priority 2)",
            "visitors": 2,
        }
    ]
    assert version.content_counts == {"buyer": 2, "back": 1}
    assert (
        f"2 visitors are in both; <strong>{buyers} → buyer (priority 1)</strong> wins over "
        f"{returning} → back (priority 2)" in page.content.decode()
    )


def test_publishing_a_preview_past_a_failed_build_does_not_pin(campaign, monkeypatch):
    from segmentation import services

    visitor = ProfileFactory(client=campaign.client, visits=2, purchases=0)
    table_build(campaign_id=campaign.pk)
    visitor.purchases = 1
    visitor.save()
    preview = table_build(campaign_id=campaign.pk, publish=False)
    with monkeypatch.context() as patch:
        patch.setattr(services, "_table_compute", _broken)
        failed = table_build(campaign_id=campaign.pk)

    table_publish(version=preview)
    preview.refresh_from_db()

    assert (failed.status, failed.is_stored) == ("failed", False)
    assert (preview.status, preview.is_pinned) == ("published", False)


def test_builds_while_pinned_add_no_version_when_nothing_changed(campaign):
    visitor = ProfileFactory(client=campaign.client, visits=2, purchases=0)
    first = table_build(campaign_id=campaign.pk)
    visitor.purchases = 1
    visitor.save()
    table_build(campaign_id=campaign.pk)
    table_publish(version=first)  # the rollback

    waiting = table_build(campaign_id=campaign.pk)
    again = table_build(campaign_id=campaign.pk)

    assert waiting.status == "ready"
    assert again.pk == waiting.pk
    assert campaign.table_versions.count() == 3


@override_settings(TABLE_VERSIONS_KEPT=1)
def test_failed_builds_never_push_stored_versions_out(campaign, monkeypatch):
    from segmentation import services

    visitor = ProfileFactory(client=campaign.client, visits=2, purchases=0)
    first = table_build(campaign_id=campaign.pk)
    visitor.purchases = 1
    visitor.save()
    table_build(campaign_id=campaign.pk)
    with monkeypatch.context() as patch:
        patch.setattr(services, "_table_compute", _broken)
        for _ in range(3):
            table_build(campaign_id=campaign.pk)
    visitor.purchases = 0
    visitor.save()
    table_build(campaign_id=campaign.pk)

    first.refresh_from_db()
    second = campaign.table_versions.get(number=2)
    assert (first.is_stored, second.is_stored) == (False, True)
    table_publish(version=second)  # still possible: it is the one version kept


def _broken(campaign):
    raise RuntimeError("segment query failed")


def test_explain_refuses_a_campaign_of_another_client(campaign):
    from campaigns.models import Campaign
    from segmentation.services import visitor_explain
    from tests.factories import ClientFactory

    with pytest.raises(Campaign.DoesNotExist):
        visitor_explain(campaign_id=campaign.pk, visitor_id="x", client_id=ClientFactory().pk)
    assert (
        visitor_explain(campaign_id=campaign.pk, visitor_id="x", client_id=None)["version"] is None
    )
