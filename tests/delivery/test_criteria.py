"""Request-time criteria (D3): checked when saved, decided per request in memory."""

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from campaigns.services import ExperimentError, experiment_start
from delivery.criteria import (
    RequestFacts,
    conditions_check,
    conditions_match,
    country_of,
    criteria_reset,
    device_type,
)
from delivery.identity import visitor_id_issue
from segmentation.services import table_build, visitor_explain
from tests.delivery.test_query import QUERY
from tests.factories import AttachmentFactory, ExperimentFactory, ProfileFactory, SegmentFactory

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
PIXEL = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Mobile Safari/537.36"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
GALAXY_TAB = (
    "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)
LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.mark.parametrize(
    ("user_agent", "device"),
    [(IPHONE, "mobile"), (PIXEL, "mobile"), (IPAD, "tablet"), (GALAXY_TAB, "tablet"),
     (LINUX, "desktop"), (GOOGLEBOT, "bot"), ("", "desktop"), ("curl/8.0", "desktop")],
)  # fmt: skip
def test_the_device_type_comes_from_the_user_agent(user_agent, device):
    assert device_type(user_agent) == device


@pytest.fixture
def geoip(settings, tmp_path):
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "DE"}})
    writer.insert_network(IPSet(["2001:db8::/32"]), {"country": {"iso_code": "FR"}})
    path = tmp_path / "countries.mmdb"
    writer.to_db_file(str(path))
    settings.GEOIP_PATH = str(path)
    criteria_reset()
    yield
    criteria_reset()


def test_the_country_comes_from_the_configured_database(geoip):
    addresses = ["203.0.113.9", "2001:db8::5", "198.51.100.1", "nope", ""]

    assert [country_of(ip) for ip in addresses] == ["DE", "FR", "", "", ""]


def test_without_a_database_no_country_is_known(settings):
    settings.GEOIP_PATH = ""
    criteria_reset()

    assert country_of("203.0.113.9") == ""


def _facts(**given):
    values = {"user_agent": LINUX, "ip": "198.51.100.1", "url": "", "referrer": "", "now": 0.0}
    return RequestFacts(**{**values, **given})


def _at(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_hours_and_weekdays_are_the_clients_local_time_and_hours_may_wrap_midnight():
    night = {"hours": {"from": 22, "to": 6}}
    # 21:30 UTC on Friday 2026-11-20 is 06:30 on Saturday in Tokyo and 22:30 in Berlin.
    friday_evening = _facts(now=_at("2026-11-20T21:30:00"))

    assert conditions_match(night, friday_evening, time_zone="Europe/Berlin") is True
    assert conditions_match(night, friday_evening, time_zone="Asia/Tokyo") is False
    assert conditions_match(night, friday_evening, time_zone="UTC") is False
    assert conditions_match({"weekdays": [5, 6]}, friday_evening, time_zone="Asia/Tokyo") is True
    assert conditions_match({"weekdays": [5, 6]}, friday_evening, time_zone="UTC") is False
    office = {"hours": {"from": 9, "to": 17}}
    assert conditions_match(office, _facts(now=_at("2026-11-20T16:59:59")), time_zone="UTC")
    assert not conditions_match(office, _facts(now=_at("2026-11-20T17:00:00")), time_zone="UTC")


def test_every_condition_given_must_hold(geoip):
    conditions = {
        "devices": ["mobile", "tablet"],
        "countries": ["DE"],
        "page_contains": "/Sale",
        "referrer_contains": "google.",
    }
    meets = {
        "user_agent": IPHONE,
        "ip": "203.0.113.9",
        "url": "https://shop.example/sale/shoes",
        "referrer": "https://www.google.de/search?q=shoes",
    }

    assert conditions_match(conditions, _facts(**meets), time_zone="UTC") is True
    others = {"user_agent": LINUX, "ip": "2001:db8::1", "url": "https://x.example/", "referrer": ""}
    for name, other in others.items():
        assert (
            conditions_match(conditions, _facts(**{**meets, name: other}), time_zone="UTC") is False
        )
    assert conditions_match({}, _facts(), time_zone="UTC") is True


COUNTRIES_ERROR = "countries: a non-empty list of two-letter country codes (DE, FR)"
HOURS_ERROR = 'hours: {"from": 0-23, "to": 1-24}, two different hours'


@pytest.mark.parametrize(
    ("conditions", "errors"),
    [
        ({"devices": ["mobile"], "hours": {"from": 22, "to": 6}, "weekdays": [0, 6],
          "countries": ["DE"], "page_contains": "x", "referrer_contains": "y"}, []),
        ([], ["conditions must be an object"]),
        ({"device": ["mobile"]}, ["device: not a condition"]),
        ({"devices": ["phone"]}, ["devices: a non-empty list of mobile, tablet, desktop, bot"]),
        ({"countries": ["de"]}, [COUNTRIES_ERROR]),
        ({"countries": ["Germany"]}, [COUNTRIES_ERROR]),
        ({"hours": {"from": 9, "to": 9}}, [HOURS_ERROR]),
        ({"hours": {"from": 9}}, [HOURS_ERROR]),
        ({"weekdays": [7]}, ["weekdays: a non-empty list of days, 0 (Monday) to 6 (Sunday)"]),
        ({"page_contains": ""}, ["page_contains: text of 1 to 200 characters"]),
    ],
)  # fmt: skip
def test_conditions_are_checked_key_by_key(conditions, errors):
    assert conditions_check(conditions) == errors


@pytest.mark.django_db
def test_an_attachment_with_bad_conditions_cannot_be_saved_through_a_form():
    attachment = AttachmentFactory.build(conditions={"devices": ["phone"]})

    with pytest.raises(ValidationError) as raised:
        attachment.full_clean(exclude=["client", "campaign", "segment", "content"])

    assert raised.value.message_dict == {
        "conditions": ["devices: a non-empty list of mobile, tablet, desktop, bot"]
    }


@pytest.mark.django_db
def test_an_ab_test_cannot_start_on_an_attachment_with_conditions():
    experiment = ExperimentFactory(attachment__conditions={"devices": ["mobile"]})

    with pytest.raises(ExperimentError, match="without request-time conditions"):
        experiment_start(experiment=experiment)


@pytest.fixture
def mobile_first(db):
    """Buyers: a mobile banner (priority 1, mobile only), else the buyers' banner (priority 2).
    Everyone on a tablet: a tablet banner (priority 3), newcomers included."""
    mobile = AttachmentFactory(priority=1, conditions={"devices": ["mobile"]})
    campaign, client = mobile.campaign, mobile.client
    buyers = AttachmentFactory(
        campaign=campaign, priority=2, segment=SegmentFactory(client=client, name="Buyers 2")
    )
    everyone = SegmentFactory(client=client, rule={"field": "visits", "op": "gte", "value": 0})
    tablet = AttachmentFactory(
        campaign=campaign, priority=3, segment=everyone, conditions={"devices": ["tablet"]}
    )
    buyer = ProfileFactory(client=client, purchases=1)
    browser = ProfileFactory(client=client, purchases=0)
    table_build(campaign_id=campaign.pk)
    return {"mobile": mobile, "buyers": buyers, "tablet": tablet, "buyer": buyer,
            "browser": browser, "campaign": campaign}  # fmt: skip


@pytest.mark.django_db
def test_attachments_with_conditions_decide_per_request(query_client, mobile_first):
    campaign = mobile_first["campaign"]
    newcomer = visitor_id_issue()

    def shown(visitor_id, user_agent):
        params = {"k": campaign.client.public_key, "v": visitor_id, "p": campaign.placement.key}
        answer = query_client.get(QUERY, params, HTTP_USER_AGENT=user_agent).json()
        return answer["placements"][0]["content"]["id"]

    buyer, browser = mobile_first["buyer"].visitor_id, mobile_first["browser"].visitor_id
    mobile, buyers, tablet = (
        mobile_first[key].content_id for key in ("mobile", "buyers", "tablet")
    )
    assert [shown(buyer, IPHONE), shown(buyer, LINUX), shown(buyer, IPAD)] == [
        mobile,
        buyers,
        buyers,
    ]
    assert [shown(browser, IPHONE), shown(browser, IPAD), shown(browser, LINUX)] == [
        campaign.default_content_id,
        tablet,
        campaign.default_content_id,
    ]
    assert [shown(newcomer, IPAD), shown(newcomer, IPHONE)] == [tablet, campaign.default_content_id]


@pytest.mark.django_db
def test_the_console_refuses_bad_conditions_with_the_reason(client, marketer, client_a):
    attachment = AttachmentFactory(campaign__client=client_a)
    url = f"/admin/campaigns/attachment/{attachment.pk}/change/"
    data = {
        "campaign": attachment.campaign_id,
        "segment": attachment.segment_id,
        "content": attachment.content_id,
        "priority": attachment.priority,
        "conditions": '{"devices": ["phone"], "hours": {"from": 9}}',
    }

    refused = client.post(url, data)
    accepted = client.post(url, {**data, "conditions": '{"devices": ["mobile"]}'})

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {
        "conditions": [
            "devices: a non-empty list of mobile, tablet, desktop, bot",
            'hours: {"from": 0-23, "to": 1-24}, two different hours',
        ]
    }
    assert accepted.status_code == 302
    attachment.refresh_from_db()
    assert attachment.conditions == {"devices": ["mobile"]}


@pytest.mark.django_db
def test_the_newcomers_answer_is_only_for_visitors_without_a_profile(query_client):
    welcome = AttachmentFactory(segment__rule={"field": "first_time", "op": "is", "value": True})
    campaign = welcome.campaign
    regular = ProfileFactory(client=campaign.client, visits=50)
    table_build(campaign_id=campaign.pk)

    def shown(visitor_id):
        params = {"k": campaign.client.public_key, "v": visitor_id, "p": campaign.placement.key}
        return query_client.get(QUERY, params).json()["placements"][0]["content"]["id"]

    assert [shown(visitor_id_issue()), shown(regular.visitor_id)] == [
        welcome.content_id,
        campaign.default_content_id,
    ]


@pytest.mark.django_db
def test_a_build_refuses_conditions_that_were_never_checked():
    attachment = AttachmentFactory(conditions={"hours": {"from": 9}})

    version = table_build(campaign_id=attachment.campaign_id)

    assert version.status == "failed"
    assert 'hours: {"from": 0-23, "to": 1-24}, two different hours' in version.error


@pytest.mark.django_db
def test_explain_names_the_request_time_rules_that_would_beat_the_table(mobile_first):
    campaign = mobile_first["campaign"]

    buyer = visitor_explain(
        campaign_id=campaign.pk, visitor_id=mobile_first["buyer"].visitor_id, client_id=None
    )
    newcomer = visitor_explain(
        campaign_id=campaign.pk, visitor_id=visitor_id_issue(), client_id=None
    )

    buyers, mobile, tablet = (mobile_first[key].content for key in ("buyers", "mobile", "tablet"))
    assert (buyer["served"]["id"], buyer["winner_now"]["content"]["id"]) == (buyers.pk, buyers.pk)
    assert [(r["content"]["id"], r["conditions"]) for r in buyer["request_rules"]] == [
        (mobile.pk, {"devices": ["mobile"]})
    ]
    assert newcomer["served"]["id"] == campaign.default_content_id
    assert [r["content"]["id"] for r in newcomer["request_rules"]] == [tablet.pk]
