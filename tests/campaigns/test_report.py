"""A campaign's effectiveness report (C3): per content and segment, day by day."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from campaigns.selectors import campaign_report
from tests.factories import AttachmentFactory, CampaignFactory, EventFactory, MembershipFactory

pytestmark = pytest.mark.django_db


def _at(day, hour=12):
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def _event(campaign, visitor, kind, moment, **fields):
    EventFactory(
        client=campaign.client, visitor_id=visitor, type=kind, occurred_at=moment,
        received_at=moment, **fields,
    )  # fmt: skip


@pytest.fixture
def campaign():
    campaign = CampaignFactory(key="spring", default_content__name="welcome")
    attachment = AttachmentFactory(
        campaign=campaign, segment__name="Buyers", content__name="thank-you"
    )
    thanks, welcome = attachment.content_id, campaign.default_content_id
    for visitor in ("a", "b", "c"):
        _event(campaign, visitor, "delivery", _at(1), content_id=thanks, campaign_key="spring")
    _event(campaign, "a", "delivery", _at(2), content_id=thanks, campaign_key="spring")
    _event(campaign, "d", "delivery", _at(2), content_id=welcome, campaign_key="spring")
    _event(campaign, "a", "click", _at(1, 13), content_id=thanks, campaign_key="spring")
    _event(campaign, "a", "purchase", _at(1, 14), order_id="1", value=Decimal("30.00"))
    _event(campaign, "a", "purchase", _at(1, 15), order_id="1", value=Decimal("30.00"))  # resent
    _event(campaign, "b", "purchase", _at(1, 9), order_id="2", value=Decimal("99.00"))  # before
    _event(campaign, "x", "delivery", _at(1), content_id=thanks, campaign_key="other")
    return campaign


def test_the_report_counts_each_contents_impressions_clicks_and_buyers(campaign):
    report = campaign_report(campaign=campaign, first=date(2026, 10, 1), last=date(2026, 10, 3))

    assert report["contents"] == [
        {
            "content": "thank-you", "segments": ["Buyers"], "is_default": False,
            "impressions": 4, "visitors": 3, "clicks": 1, "click_through_rate": 0.25,
            "buyers": 1, "conversion_rate": 1 / 3, "revenue": Decimal("30.00"),
        },
        {
            "content": "welcome", "segments": [], "is_default": True,
            "impressions": 1, "visitors": 1, "clicks": 0, "click_through_rate": 0.0,
            "buyers": 0, "conversion_rate": 0.0, "revenue": Decimal("0"),
        },
    ]  # fmt: skip
    assert [(d["day"].day, d["impressions"], d["clicks"]) for d in report["daily"]] == [
        (1, 3, 1),
        (2, 2, 0),
        (3, 0, 0),
    ]


def test_the_report_page_is_for_the_campaigns_client_only(client, campaign):
    url = reverse("admin:campaigns-campaign-report", args=[campaign.pk])
    client.force_login(MembershipFactory(client=campaign.client, role="viewer").user)
    own = client.get(url, {"first": "2026-10-01", "last": "2026-10-03"})
    client.force_login(MembershipFactory(role="marketer").user)
    other = client.get(url)

    assert own.status_code == 200
    assert "thank-you" in own.content.decode()
    assert other.status_code == 403
