"""S5 in the console: a member of client A neither sees nor changes client B's rows."""

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import models
from django.urls import reverse

from aggregation.models import (
    ConsolidationRun,
    Event,
    ImportJob,
    ImportMapping,
    Profile,
    VisitorLink,
    VisitorSeparation,
)
from campaigns.models import (
    Attachment,
    Campaign,
    Content,
    ContentChange,
    EmailActivity,
    EmailCampaign,
    EmailMailing,
    EmailMessage,
    EmailSuppression,
    Experiment,
    Placement,
)
from campaigns.services import content_save
from coremetrics.models import Client
from delivery.models import Visitor
from segmentation.models import Segment, TableVersion
from segmentation.services import table_build
from tests.factories import (
    MOMENT,
    AttachmentFactory,
    CampaignFactory,
    ContentFactory,
    EmailCampaignFactory,
    EventFactory,
    ImportJobFactory,
    ImportMappingFactory,
    PlacementFactory,
    ProfileFactory,
    SegmentFactory,
    VisitorFactory,
    VisitorLinkFactory,
    VisitorSeparationFactory,
)

pytestmark = pytest.mark.django_db

# Every row of client B carries this word (names, visitor ids, the client's own name), so a page
# that mentions it leaks B's data.
OTHER = "bravo"

INLINE_EMPTY = {
    "attachments-TOTAL_FORMS": "0",
    "attachments-INITIAL_FORMS": "0",
    "attachments-MIN_NUM_FORMS": "0",
    "attachments-MAX_NUM_FORMS": "1000",
}
# Django's own wording, typographic quotes included.
DOES_NOT_EXIST = "{name} with ID \u201c{pk}\u201d doesn\u2019t exist. Perhaps it was deleted?"
INVALID_CHOICE = ["Select a valid choice. That choice is not one of the available choices."]


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _tableversion_make(client: Client, tag: str) -> TableVersion:
    campaign = CampaignFactory(client=client, name=f"{tag} campaign")
    return table_build(campaign_id=campaign.pk)


def _newsletter_make(client: Client, tag: str) -> EmailCampaign:
    segment = SegmentFactory(client=client, name=f"{tag} segment")
    return EmailCampaignFactory(client=client, name=f"{tag} newsletter", segments=[segment])


def _message_make(client: Client, tag: str) -> EmailMessage:
    campaign = _newsletter_make(client, tag)
    mailing = EmailMailing.objects.create(client=client, campaign=campaign, occurrence=MOMENT)
    return EmailMessage.objects.create(
        client=client, mailing=mailing, campaign=campaign, visitor_id=f"{tag}-recipient",
        email=f"{tag}@example.com", group="a", status="sent",
    )  # fmt: skip


@dataclass(frozen=True)
class Kind:
    """One tenant admin: how to make a row of a client and a valid change form for it."""

    model: type[models.Model]
    make: Any
    change_data: Any = None
    changed: dict | None = None
    # Read-only rows an editor may still delete, or act on with an action of the admin.
    is_deletable: bool = False
    has_actions: bool = False

    @property
    def is_read_only(self) -> bool:
        return self.change_data is None

    def url(self, view: str, *args) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


KINDS = {
    "content": Kind(
        Content,
        lambda client, tag: ContentFactory(client=client, name=f"{tag} banner"),
        lambda row: {
            "name": "renamed banner",
            "type": "image",
            "url": "https://cdn.example/renamed.png",
            "click_url": "",
            "html": "",
            "alt_text": "",
        },
        {"name": "renamed banner", "url": "https://cdn.example/renamed.png", "click_url": ""},
    ),
    "placement": Kind(
        Placement,
        lambda client, tag: PlacementFactory(client=client, name=f"{tag} placement"),
        lambda row: {"key": "renamed-placement", "name": "renamed placement"},
        {"key": "renamed-placement", "name": "renamed placement"},
    ),
    "campaign": Kind(
        Campaign,
        lambda client, tag: CampaignFactory(client=client, name=f"{tag} campaign"),
        lambda row: {
            "key": "renamed-campaign",
            "name": "renamed campaign",
            "placement": str(row.placement_id),
            "default_content": str(row.default_content_id),
            "is_active": "on",
            "cap_period": "day",
            **INLINE_EMPTY,
        },
        {"key": "renamed-campaign", "name": "renamed campaign"},
    ),
    "attachment": Kind(
        Attachment,
        lambda client, tag: AttachmentFactory(
            campaign__client=client,
            campaign__name=f"{tag} campaign",
            segment__name=f"{tag} segment",
            content__name=f"{tag} banner",
        ),
        lambda row: {
            "campaign": str(row.campaign_id),
            "priority": "77",
            "segment": str(row.segment_id),
            "content": str(row.content_id),
        },
        {"priority": 77},
    ),
    "segment": Kind(
        Segment,
        lambda client, tag: SegmentFactory(client=client, name=f"{tag} segment"),
        lambda row: {
            "name": "renamed segment",
            "description": "",
            "rule": json.dumps({"field": "visits", "op": "gte", "value": 3}),
        },
        {"name": "renamed segment", "rule": {"field": "visits", "op": "gte", "value": 3}},
    ),
    "tableversion": Kind(TableVersion, _tableversion_make),
    "experiment": Kind(
        Experiment,
        lambda client, tag: Experiment.objects.create(
            client=client,
            name=f"{tag} test",
            attachment=AttachmentFactory(
                campaign__client=client,
                campaign__name=f"{tag} campaign",
                segment__name=f"{tag} segment",
                content__name=f"{tag} banner",
            ),
        ),
        lambda row: {
            "name": "renamed test",
            "attachment": str(row.attachment_id),
            "holdout_share": "0",
            "minimum_days": "14",
            **{
                f"groups-{name}": value
                for name, value in {
                    "TOTAL_FORMS": "0",
                    "INITIAL_FORMS": "0",
                    "MIN_NUM_FORMS": "0",
                    "MAX_NUM_FORMS": "1000",
                }.items()
            },
        },
        {"name": "renamed test"},
    ),
    "profile": Kind(
        Profile,
        lambda client, tag: ProfileFactory(client=client, visitor_id=f"{tag}-profile-visitor"),
    ),
    "event": Kind(
        Event, lambda client, tag: EventFactory(client=client, visitor_id=f"{tag}-event-visitor")
    ),
    "visitor": Kind(
        Visitor, lambda client, tag: VisitorFactory(client=client, visitor_id=f"{tag}-visitor")
    ),
    "importmapping": Kind(
        ImportMapping,
        lambda client, tag: ImportMappingFactory(client=client, name=f"{tag} mapping"),
        lambda row: {
            "name": "renamed mapping",
            "format": "jsonl",
            "columns": json.dumps({"email": "mail"}),
        },
        {"name": "renamed mapping", "format": "jsonl", "columns": {"email": "mail"}},
    ),
    "visitorlink": Kind(
        VisitorLink,
        lambda client, tag: VisitorLinkFactory(client=client, visitor_id=f"{tag}-linked"),
        has_actions=True,
    ),
    "visitorseparation": Kind(
        VisitorSeparation,
        lambda client, tag: VisitorSeparationFactory(client=client, visitor_id=f"{tag}-apart"),
        is_deletable=True,
    ),
    "contentchange": Kind(
        ContentChange,
        lambda client, tag: content_save(
            content=ContentFactory.build(
                client=client, name=f"{tag} script", type="script", url="https://cdn.example/a.js"
            ),
            by=f"{tag} admin",
            is_admin=True,
        ).changes.get(),
    ),
    "emailcampaign": Kind(
        EmailCampaign,
        _newsletter_make,
        lambda row: {
            "name": "renamed newsletter",
            "status": "draft",
            "segments": [str(pk) for pk in row.segments.values_list("pk", flat=True)],
            "from_email": "news@shop.example",
            "subject": "Hi",
            "html_body": "<p>Hi</p>",
            "text_body": "Hi",
            "subject_b_share": "5000",
            "holdout_share": "0",
            "attribution_days": "7",
        },
        {
            "name": "renamed newsletter",
            "status": "draft",
            "from_email": "news@shop.example",
            "subject": "Hi",
            "html_body": "<p>Hi</p>",
            "text_body": "Hi",
        },
    ),
    "emailsuppression": Kind(
        EmailSuppression,
        lambda client, tag: EmailSuppression.objects.create(
            client=client, email=f"{tag}@example.com", reason="manual"
        ),
        lambda row: {"email": "Renamed@Example.com", "reason": "manual"},
        {"email": "renamed@example.com"},
    ),
    "emailmailing": Kind(EmailMailing, lambda client, tag: _message_make(client, tag).mailing),
    "emailmessage": Kind(EmailMessage, _message_make),
    "emailactivity": Kind(
        EmailActivity,
        lambda client, tag: EmailActivity.objects.create(
            event_id=uuid.uuid4(),
            client=client,
            message=_message_make(client, tag),
            kind="open",
            at=MOMENT,
            user_agent=f"{tag} agent",
        ),
    ),
    "importjob": Kind(
        ImportJob,
        lambda client, tag: ImportJobFactory(
            mapping__client=client, file_name=f"{tag}-customers.csv"
        ),
    ),
}
EDITABLE = [name for name, kind in KINDS.items() if not kind.is_read_only]
READ_ONLY = [name for name, kind in KINDS.items() if kind.is_read_only]


def fields_of(row: models.Model) -> dict:
    row.refresh_from_db()
    return {field.attname: getattr(row, field.attname) for field in row._meta.concrete_fields}


def result_pks(response) -> set[int]:
    return {row.pk for row in response.context["cl"].result_list}


@pytest.mark.parametrize("name", KINDS)
def test_marketer_changelist_lists_only_own_rows(client, client_a, client_b, marketer, name):
    kind = KINDS[name]
    own = kind.make(client_a, "alpha")
    kind.make(client_b, OTHER)

    response = client.get(kind.url("changelist"))

    assert response.status_code == 200
    assert result_pks(response) == {own.pk}


@pytest.mark.parametrize(
    "name",
    [name for name in KINDS],
)
def test_marketer_changelist_page_never_names_other_client(
    client, client_a, client_b, marketer, name
):
    kind = KINDS[name]
    kind.make(client_a, "alpha")
    kind.make(client_b, OTHER)

    response = client.get(kind.url("changelist"))

    assert response.status_code == 200
    assert OTHER not in response.content.decode().lower()


@pytest.mark.parametrize("name", KINDS)
def test_marketer_change_page_of_other_client_redirects_to_index(
    client, client_a, client_b, marketer, name
):
    kind = KINDS[name]
    foreign = kind.make(client_b, OTHER)

    response = client.get(kind.url("change", foreign.pk), follow=True)

    assert response.redirect_chain == [(reverse("admin:index"), 302)]
    assert response.status_code == 200
    assert messages_of(response) == [
        DOES_NOT_EXIST.format(name=kind.model._meta.verbose_name, pk=foreign.pk)
    ]
    assert OTHER not in response.content.decode().lower()


@pytest.mark.parametrize("name", EDITABLE)
def test_marketer_changes_own_row_with_the_same_form(client, client_a, marketer, name):
    """The control for the next test: the payload is a valid change when aimed at A's row."""
    kind = KINDS[name]
    own = kind.make(client_a, "alpha")
    data = kind.change_data(own)
    before = fields_of(own)

    response = client.post(kind.url("change", own.pk), data)

    assert response.status_code == 302
    assert response["Location"] == kind.url("changelist")
    after = fields_of(own)
    # auto_now: Segment.updated_at moves on every save.
    if "updated_at" in before:
        assert after.pop("updated_at") > before.pop("updated_at")
    assert after == {**before, **kind.changed}


@pytest.mark.parametrize("name", EDITABLE)
def test_marketer_cannot_change_other_clients_row(client, client_a, client_b, marketer, name):
    kind = KINDS[name]
    foreign = kind.make(client_b, OTHER)
    before = fields_of(foreign)

    response = client.post(kind.url("change", foreign.pk), kind.change_data(foreign))

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")
    assert fields_of(foreign) == before


@pytest.mark.parametrize("name", READ_ONLY)
def test_marketer_change_post_on_read_only_admin_is_forbidden(
    client, client_a, client_b, marketer, name
):
    kind = KINDS[name]
    own = kind.make(client_a, "alpha")
    foreign = kind.make(client_b, OTHER)
    before = {"own": fields_of(own), "foreign": fields_of(foreign)}

    own_response = client.post(kind.url("change", own.pk), {"visitor_id": "changed"})
    foreign_response = client.post(kind.url("change", foreign.pk), {"visitor_id": "changed"})

    assert own_response.status_code == 403
    assert foreign_response.status_code == 403
    assert {"own": fields_of(own), "foreign": fields_of(foreign)} == before


@pytest.mark.parametrize("name", KINDS)
def test_marketer_cannot_delete_other_clients_row(client, client_a, client_b, marketer, name):
    kind = KINDS[name]
    foreign = kind.make(client_b, OTHER)
    before = fields_of(foreign)

    response = client.post(kind.url("delete", foreign.pk), {"post": "yes"})

    if kind.is_read_only and not kind.is_deletable:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:index")
    assert fields_of(foreign) == before


@pytest.mark.parametrize("name", KINDS)
def test_marketer_bulk_delete_action_skips_other_clients_rows(
    client, client_a, client_b, marketer, name
):
    kind = KINDS[name]
    foreign = kind.make(client_b, OTHER)
    before = fields_of(foreign)
    data = {
        "action": "delete_selected",
        "index": "0",
        "_selected_action": [foreign.pk],
        "post": "yes",
    }

    response = client.post(kind.url("changelist"), data)

    if kind.is_read_only and not (kind.is_deletable or kind.has_actions):
        # No delete permission, so no actions: the POST just renders the list.
        assert response.status_code == 200
        assert result_pks(response) == set()
    else:
        assert response.status_code == 302
        assert response["Location"] == kind.url("changelist")
    assert fields_of(foreign) == before


@pytest.mark.parametrize("name", EDITABLE)
def test_marketer_add_form_has_no_client_field(client, marketer, name):
    response = client.get(KINDS[name].url("add"))

    assert response.status_code == 200
    assert "client" not in response.context["adminform"].form.fields


def test_marketer_campaign_add_form_offers_only_own_placements_and_content(
    client, client_a, client_b, marketer
):
    own = CampaignFactory(client=client_a)
    CampaignFactory(client=client_b)

    response = client.get(KINDS["campaign"].url("add"))

    fields = response.context["adminform"].form.fields
    assert set(fields["placement"].queryset) == {own.placement}
    assert set(fields["default_content"].queryset) == {own.default_content}


def test_marketer_attachment_add_form_offers_only_own_rows(client, client_a, client_b, marketer):
    own = AttachmentFactory(campaign__client=client_a)
    AttachmentFactory(campaign__client=client_b)

    response = client.get(KINDS["attachment"].url("add"))

    fields = response.context["adminform"].form.fields
    assert set(fields["campaign"].queryset) == {own.campaign}
    assert set(fields["segment"].queryset) == {own.segment}
    assert set(fields["content"].queryset) == {own.content, own.campaign.default_content}


@pytest.mark.parametrize("foreign_field", ["placement", "default_content"])
def test_marketer_campaign_add_with_other_clients_row_is_rejected(
    client, client_a, client_b, marketer, foreign_field
):
    own = CampaignFactory(client=client_a)
    foreign = CampaignFactory(client=client_b)
    data = {
        "key": "new-campaign",
        "name": "new campaign",
        "placement": str(PlacementFactory(client=client_a).pk),
        "default_content": str(own.default_content_id),
        "is_active": "on",
        "cap_period": "day",
        **INLINE_EMPTY,
    }
    data[foreign_field] = str(getattr(foreign, f"{foreign_field}_id"))

    response = client.post(KINDS["campaign"].url("add"), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {foreign_field: INVALID_CHOICE}
    assert Campaign.objects.count() == 2


@pytest.mark.parametrize("foreign_field", ["campaign", "segment", "content"])
def test_marketer_attachment_add_with_other_clients_row_is_rejected(
    client, client_a, client_b, marketer, foreign_field
):
    own = AttachmentFactory(campaign__client=client_a)
    foreign = AttachmentFactory(campaign__client=client_b)
    data = {
        "campaign": str(own.campaign_id),
        "priority": "50",
        "segment": str(SegmentFactory(client=client_a).pk),
        "content": str(own.content_id),
    }
    data[foreign_field] = str(getattr(foreign, f"{foreign_field}_id"))

    response = client.post(KINDS["attachment"].url("add"), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {foreign_field: INVALID_CHOICE}
    assert Attachment.objects.count() == 2


def test_marketer_new_campaign_and_its_attachments_belong_to_their_client(
    client, client_a, client_b, marketer
):
    placement = PlacementFactory(client=client_a)
    content = ContentFactory(client=client_a)
    segment = SegmentFactory(client=client_a)
    data = {
        "key": "spring",
        "name": "spring campaign",
        "placement": str(placement.pk),
        "default_content": str(content.pk),
        "is_active": "on",
        "cap_period": "day",
        **INLINE_EMPTY,
        "attachments-TOTAL_FORMS": "1",
        "attachments-0-priority": "1",
        "attachments-0-segment": str(segment.pk),
        "attachments-0-content": str(content.pk),
        "attachments-0-conditions": "",
    }

    response = client.post(KINDS["campaign"].url("add"), data)

    assert response.status_code == 302
    campaign = Campaign.objects.get(key="spring")
    assert campaign.client == client_a
    assert list(campaign.attachments.values_list("client_id", "segment_id", "content_id")) == [
        (client_a.pk, segment.pk, content.pk)
    ]
    # Conditions left empty are none, not null.
    assert campaign.attachments.get().conditions == {}


@pytest.mark.parametrize(
    ("name", "data", "lookup"),
    [
        (
            "content",
            {"name": "new banner", "type": "image", "url": "https://cdn.example/n.png"},
            {"name": "new banner"},
        ),
        ("placement", {"key": "new-spot", "name": "new spot"}, {"key": "new-spot"}),
        (
            "segment",
            {
                "name": "new segment",
                "rule": json.dumps({"field": "visits", "op": "gte", "value": 2}),
            },
            {"name": "new segment"},
        ),
    ],
)
def test_marketer_new_row_gets_their_client(
    client, client_a, client_b, marketer, name, data, lookup
):
    kind = KINDS[name]

    response = client.post(kind.url("add"), {**data, "client": str(client_b.pk)})

    assert response.status_code == 302
    assert kind.model.objects.get(**lookup).client == client_a
    assert kind.model.objects.count() == 1


def test_marketer_campaign_inline_offers_only_own_segments_and_content(
    client, client_a, client_b, marketer
):
    campaign = CampaignFactory(client=client_a)
    segment = SegmentFactory(client=client_a)
    AttachmentFactory(campaign__client=client_b)

    response = client.get(KINDS["campaign"].url("change", campaign.pk))

    [inline] = response.context["inline_admin_formsets"]
    fields = inline.formset.empty_form.fields
    assert "client" not in fields
    assert set(fields["segment"].queryset) == {segment}
    assert set(fields["content"].queryset) == {campaign.default_content}


@pytest.mark.parametrize("foreign_field", ["segment", "content"])
def test_marketer_campaign_inline_with_other_clients_row_is_rejected(
    client, client_a, client_b, marketer, foreign_field
):
    campaign = CampaignFactory(client=client_a)
    segment = SegmentFactory(client=client_a)
    foreign = AttachmentFactory(campaign__client=client_b)
    data = {
        **KINDS["campaign"].change_data(campaign),
        "key": campaign.key,
        "name": campaign.name,
        "attachments-TOTAL_FORMS": "1",
        "attachments-0-priority": "1",
        "attachments-0-segment": str(segment.pk),
        "attachments-0-content": str(campaign.default_content_id),
    }
    data[f"attachments-0-{foreign_field}"] = str(getattr(foreign, f"{foreign_field}_id"))

    response = client.post(KINDS["campaign"].url("change", campaign.pk), data)

    assert response.status_code == 200
    [inline] = response.context["inline_admin_formsets"]
    assert inline.formset.errors == [{foreign_field: INVALID_CHOICE}]
    assert list(Attachment.objects.values_list("pk", flat=True)) == [foreign.pk]


def test_marketer_attachment_filter_offers_only_own_campaigns(client, client_a, client_b, marketer):
    # Two own campaigns: Django shows a related filter only when it offers a choice.
    own = AttachmentFactory(campaign__client=client_a, campaign__name="alpha campaign")
    second = AttachmentFactory(campaign__client=client_a, campaign__name="alpha second")
    AttachmentFactory(campaign__client=client_b, campaign__name="bravo campaign")

    response = client.get(KINDS["attachment"].url("changelist"))

    [campaign_filter] = response.context["cl"].filter_specs
    assert sorted(campaign_filter.lookup_choices) == sorted(
        [(own.campaign_id, "alpha campaign"), (second.campaign_id, "alpha second")]
    )


def test_superuser_attachment_pointing_at_other_clients_campaign_is_rejected(
    client, client_a, client_b, superuser
):
    own = AttachmentFactory(campaign__client=client_a)
    foreign = CampaignFactory(client=client_b)
    data = {
        "client": str(client_a.pk),
        "campaign": str(foreign.pk),
        "priority": "50",
        "segment": str(SegmentFactory(client=client_a).pk),
        "content": str(own.content_id),
    }

    response = client.post(KINDS["attachment"].url("add"), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "campaign": ["Choose one of this client's own rows."]
    }
    assert Attachment.objects.count() == 1


def test_marketer_index_lists_only_tenant_apps(client, marketer):
    response = client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert {
        app["app_label"]: sorted(model["object_name"] for model in app["models"])
        for app in response.context["app_list"]
    } == {
        "aggregation": [
            "Event",
            "ImportJob",
            "ImportMapping",
            "Profile",
            "VisitorLink",
            "VisitorSeparation",
        ],
        "campaigns": [
            "Attachment",
            "Campaign",
            "Content",
            "ContentChange",
            "EmailActivity",
            "EmailCampaign",
            "EmailMailing",
            "EmailMessage",
            "EmailSuppression",
            "Experiment",
            "Placement",
        ],
        "coremetrics": ["Client"],
        "delivery": ["Visitor"],
        "segmentation": ["Segment", "TableVersion"],
    }


def test_marketer_client_changelist_shows_only_their_client(client, client_a, client_b, marketer):
    response = client.get(reverse("admin:coremetrics_client_changelist"))

    assert response.status_code == 200
    assert result_pks(response) == {client_a.pk}
    assert OTHER not in response.content.decode().lower()


def test_marketer_cannot_open_other_client(client, client_a, client_b, marketer):
    response = client.get(
        reverse("admin:coremetrics_client_change", args=[client_b.pk]), follow=True
    )

    assert response.redirect_chain == [(reverse("admin:index"), 302)]
    assert messages_of(response) == [DOES_NOT_EXIST.format(name="client", pk=client_b.pk)]
    page = response.content.decode()
    assert client_b.public_key not in page
    assert "Bravo Shop" not in page


def test_marketer_client_page_shows_tag_snippet_with_their_public_key(
    client, client_a, client_b, marketer
):
    response = client.get(reverse("admin:coremetrics_client_change", args=[client_a.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('id="tag-snippet"') == 1
    assert client_a.public_key in response.context["snippet"]
    assert client_a.public_key in page
    assert client_b.public_key not in page


def test_marketer_cannot_change_their_client(client, client_a, marketer):
    before = fields_of(client_a)

    response = client.post(
        reverse("admin:coremetrics_client_change", args=[client_a.pk]),
        {"name": "Renamed", "slug": "renamed", "timezone": "UTC", "is_active": "on"},
    )

    assert response.status_code == 403
    assert fields_of(client_a) == before


@pytest.mark.parametrize("name", KINDS)
def test_superuser_sees_every_clients_rows(client, client_a, client_b, superuser, name):
    kind = KINDS[name]
    rows = [kind.make(client_a, "alpha"), kind.make(client_b, OTHER)]

    response = client.get(kind.url("changelist"))

    assert response.status_code == 200
    assert result_pks(response) == {row.pk for row in rows}


def test_superuser_sees_every_client(client, client_a, client_b, superuser):
    response = client.get(reverse("admin:coremetrics_client_changelist"))

    assert result_pks(response) == {client_a.pk, client_b.pk}


@pytest.mark.parametrize("name", KINDS)
def test_viewer_sees_own_rows_read_only(client, client_a, client_b, viewer, name):
    kind = KINDS[name]
    own = kind.make(client_a, "alpha")
    kind.make(client_b, OTHER)

    changelist = client.get(kind.url("changelist"))
    change_page = client.get(kind.url("change", own.pk))

    assert changelist.status_code == 200
    assert result_pks(changelist) == {own.pk}
    assert change_page.status_code == 200
    assert change_page.context["has_change_permission"] is False
    assert change_page.context["original"] == own


@pytest.mark.parametrize("name", KINDS)
def test_viewer_cannot_change_add_or_delete(client, client_a, viewer, name):
    kind = KINDS[name]
    own = kind.make(client_a, "alpha")
    before = fields_of(own)
    count = kind.model.objects.count()
    data = kind.change_data(own) if kind.change_data else {}

    change = client.post(kind.url("change", own.pk), data)
    add_page = client.get(kind.url("add"))
    add = client.post(kind.url("add"), data)
    delete = client.post(kind.url("delete", own.pk), {"post": "yes"})

    assert [change.status_code, add_page.status_code, add.status_code, delete.status_code] == [
        403,
        403,
        403,
        403,
    ]
    assert fields_of(own) == before
    assert kind.model.objects.count() == count


@pytest.mark.parametrize("name", KINDS)
def test_staff_without_membership_sees_nothing(client, client_a, outsider, name):
    kind = KINDS[name]
    kind.make(client_a, "alpha")

    response = client.get(kind.url("changelist"))

    assert response.status_code == 403


def test_staff_without_membership_index_shows_no_apps(client, client_a, outsider):
    client_page = client.get(reverse("admin:coremetrics_client_changelist"))
    index = client.get(reverse("admin:index"))

    assert client_page.status_code == 403
    assert index.status_code == 200
    assert index.context["app_list"] == []


def test_consolidation_runs_are_superuser_only(client, marketer):
    ConsolidationRun.objects.create()  # no factory for this system-wide row
    url = reverse("admin:aggregation_consolidationrun_changelist")

    response = client.get(url)

    assert response.status_code == 403


def test_superuser_lists_consolidation_runs(client, superuser):
    run = ConsolidationRun.objects.create()  # no factory for this system-wide row

    response = client.get(reverse("admin:aggregation_consolidationrun_changelist"))

    assert response.status_code == 200
    assert result_pks(response) == {run.pk}


RETURNING = {"field": "visits", "op": "gt", "value": 1}


@pytest.mark.parametrize(
    ("url_name", "make", "data"),
    [
        ("campaigns_content_add", lambda c: ContentFactory(client=c, name="Spring"),
         {"name": "Spring", "type": "image", "url": "https://cdn.example/x.png", "click_url": "",
          "html": "", "alt_text": ""}),
        ("campaigns_placement_add", lambda c: PlacementFactory(client=c, key="hero"),
         {"key": "hero", "name": "Hero"}),
        ("segmentation_segment_add", lambda c: SegmentFactory(client=c, name="Buyers"),
         {"name": "Buyers", "description": "", "rule": json.dumps(RETURNING)}),
    ],
)  # fmt: skip
def test_marketer_duplicate_name_is_a_form_error_not_a_500(
    client, client_a, marketer, url_name, make, data
):
    existing = make(client_a)
    model = type(existing)
    before = model.objects.count()

    response = client.post(reverse(f"admin:{url_name}"), data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["__all__"]
    assert model.objects.count() == before
