import pytest

from delivery.identity import visitor_id_issue
from delivery.stores import store_get
from delivery.tables import local_tables
from segmentation.models import TableVersion
from segmentation.services import table_build, tables_build
from segmentation.tasks import build_table
from tests.factories import AttachmentFactory, CampaignFactory, ProfileFactory

pytestmark = pytest.mark.django_db

BOUGHT = {"field": "purchases", "op": "gte", "value": 1}
RETURNING = {"field": "visits", "op": "gt", "value": 1}


@pytest.fixture
def campaign():
    """Buyers (priority 1) and returning visitors (priority 2), each with their banner."""
    campaign = CampaignFactory()
    AttachmentFactory(campaign=campaign, segment__rule=BOUGHT, priority=1, content__name="buyer")
    AttachmentFactory(campaign=campaign, segment__rule=RETURNING, priority=2, content__name="back")
    return campaign


def _served(campaign, visitor_id) -> tuple[str, str, int | None]:
    view = local_tables().client(campaign.client.public_key)
    placement = view.placements[campaign.placement.key]
    table = placement.table
    content_id = table.visitors.get(visitor_id) if table else None
    content = table.contents[content_id] if content_id else placement.default
    return content["name"], "table" if content_id else "default", table and table.version


def test_priority_decides_for_visitors_in_several_segments(campaign):
    client = campaign.client
    both = ProfileFactory(client=client, purchases=1, visits=3)
    buyer = ProfileFactory(client=client, purchases=1, visits=1)
    returning = ProfileFactory(client=client, purchases=0, visits=2)
    newcomer = ProfileFactory(client=client, purchases=0, visits=1)
    ProfileFactory(purchases=5, visits=5)  # another client's buyer never enters this table

    version = table_build(campaign_id=campaign.pk)

    assert (version.status, version.number, version.visitor_count) == ("published", 1, 3)
    assert version.segment_counts == {
        campaign.attachments.get(priority=1).segment.name: 2,
        campaign.attachments.get(priority=2).segment.name: 2,
    }
    assert version.content_counts == {"buyer": 2, "back": 1}
    default = campaign.default_content.name
    assert _served(campaign, both.visitor_id) == ("buyer", "table", 1)
    assert _served(campaign, buyer.visitor_id) == ("buyer", "table", 1)
    assert _served(campaign, returning.visitor_id) == ("back", "table", 1)
    assert _served(campaign, newcomer.visitor_id) == (default, "default", 1)
    assert _served(campaign, visitor_id_issue()) == (default, "default", 1)


def test_new_version_supersedes_and_serves(campaign):
    visitor = ProfileFactory(client=campaign.client, purchases=0, visits=2)
    first = table_build(campaign_id=campaign.pk)
    visitor.purchases = 1
    visitor.save(update_fields=["purchases"])

    second = build_table(campaign.pk)

    first.refresh_from_db()
    assert (first.status, second) == (
        "superseded",
        {"campaign": campaign.pk, "version": 2, "status": "published"},
    )
    assert _served(campaign, visitor.visitor_id) == ("buyer", "table", 2)


def test_failed_build_leaves_the_current_version_serving(campaign):
    visitor = ProfileFactory(client=campaign.client, purchases=1)
    table_build(campaign_id=campaign.pk)
    # A rule stored before validation existed (or edited in the database by hand).
    AttachmentFactory(campaign=campaign, priority=3, segment__rule={"field": "password"})

    failed = table_build(campaign_id=campaign.pk)

    assert failed.status == "failed"
    assert failed.error == (
        "RuleError: segment "
        f"{campaign.attachments.get(priority=3).segment.name}: "
        "rule: expected all, any, not, field/op/value or event/count, got ['field']"
    )
    assert TableVersion.objects.get(campaign=campaign, number=1).status == "published"
    assert _served(campaign, visitor.visitor_id) == ("buyer", "table", 1)


def test_building_again_with_nothing_changed_adds_no_version(campaign):
    ProfileFactory(client=campaign.client, purchases=1)
    first = table_build(campaign_id=campaign.pk)

    again = table_build(campaign_id=campaign.pk)

    assert again == first
    assert list(campaign.table_versions.values_list("number", "status")) == [(1, "published")]


def test_only_the_newest_versions_are_kept_in_the_store(campaign, settings):
    settings.TABLE_VERSIONS_KEPT = 2
    for _ in range(5):
        ProfileFactory(client=campaign.client, purchases=1)  # each build has a new buyer
        table_build(campaign_id=campaign.pk)

    stored = [store_get().table_get(campaign.pk, number) is not None for number in range(1, 6)]

    assert stored == [False, False, True, True, True]


def test_inactive_campaigns_are_not_built(campaign):
    CampaignFactory(client=campaign.client, is_active=False)

    versions = tables_build(client_id=campaign.client_id)

    assert [version.campaign_id for version in versions] == [campaign.pk]
