"""The REST API: every function reachable with a client's token, every other client sealed off."""

import io
import json
import time
import uuid

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from aggregation.models import ImportJob, ImportMapping, Profile
from aggregation.spool import spool_seal_open
from campaigns.models import (
    Attachment,
    Campaign,
    Content,
    EmailCampaign,
    EmailMailing,
    EmailMessage,
    EmailSuppression,
    Experiment,
    Placement,
)
from campaigns.services.email import mailing_start
from campaigns.services.email_tracking import suppression_add
from coremetrics.models import Membership
from coremetrics.tokens import api_token_create
from delivery.identity import visitor_id_issue
from segmentation.models import Segment, TableVersion
from segmentation.services import table_build
from tests.factories import (
    AttachmentFactory,
    CampaignFactory,
    ContentFactory,
    EmailCampaignFactory,
    ExperimentFactory,
    ImportMappingFactory,
    MembershipFactory,
    PlacementFactory,
    ProfileFactory,
    SegmentFactory,
)

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _api(client, scope="write"):
    _, key = api_token_create(client=client, name=f"{scope} token", scope=scope)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api


@pytest.fixture
def api_a(client_a):
    return _api(client_a)


def test_a_campaign_is_set_up_built_and_published_through_the_api(
    api_a, client_a, django_capture_on_commit_callbacks
):
    placement = api_a.post(f"{API}/placements", {"key": "hero", "name": "Hero"}, format="json")
    content = api_a.post(
        f"{API}/contents",
        {"name": "Welcome", "type": "image", "url": "https://cdn.example/w.png"},
        format="json",
    )
    default = api_a.post(
        f"{API}/contents",
        {"name": "Default", "type": "html", "html": "<p>Hello</p>"},
        format="json",
    )
    campaign = api_a.post(
        f"{API}/campaigns",
        {"key": "spring", "name": "Spring", "placement": placement.json()["id"],
         "default_content": default.json()["id"]},
        format="json",
    )  # fmt: skip
    segment = api_a.post(
        f"{API}/segments",
        {"name": "Buyers", "rule": {"field": "purchases", "op": "gte", "value": 1}},
        format="json",
    )
    attachment = api_a.post(
        f"{API}/attachments",
        {"campaign": campaign.json()["id"], "segment": segment.json()["id"],
         "content": content.json()["id"], "priority": 1, "conditions": {"devices": ["mobile"]}},
        format="json",
    )  # fmt: skip
    ProfileFactory(client=client_a, purchases=2)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        build = api_a.post(
            f"{API}/campaigns/{campaign.json()['id']}/builds", {"publish": False}, format="json"
        )

    assert [
        r.status_code for r in (placement, content, default, campaign, segment, attachment)
    ] == [201] * 6
    assert (build.status_code, build.json(), len(queued)) == (202, {"queued": True}, 1)
    assert Campaign.objects.get(key="spring").client == client_a
    assert Attachment.objects.get().conditions == {"devices": ["mobile"]}

    # The queued job builds a preview; publishing it through the API serves it.
    table_build(campaign_id=campaign.json()["id"], publish=False)
    versions = api_a.get(f"{API}/table-versions", {"campaign": campaign.json()["id"]}).json()
    [preview] = versions["results"]
    published = api_a.post(f"{API}/table-versions/{preview['id']}/publish")
    assert (preview["status"], preview["visitor_count"]) == ("ready", 0)
    assert (published.status_code, published.json()["status"]) == (200, "published")


def test_bad_input_gets_a_clear_error_and_writes_nothing(api_a, client_a):
    PlacementFactory(client=client_a, key="hero")

    answers = [
        api_a.post(f"{API}/placements", {"key": "hero", "name": "Again"}, format="json"),
        api_a.post(f"{API}/segments", {"name": "S", "rule": {"field": "nope"}}, format="json"),
        api_a.post(f"{API}/contents", {"name": "C", "type": "image"}, format="json"),
        api_a.post(
            f"{API}/attachments",
            {"campaign": 999999, "segment": 1, "content": 1, "conditions": {"devices": ["tv"]}},
            format="json",
        ),
    ]

    assert [answer.status_code for answer in answers] == [400] * 4
    assert answers[0].json() == {"key": ["already used (key)"]}
    assert "rule" in answers[1].json()
    assert answers[2].json() == {"url": ["this type of content needs its address"]}
    assert set(answers[3].json()) == {"campaign", "segment", "content", "conditions"}
    assert (Placement.objects.count(), Segment.objects.count(), Content.objects.count()) == (
        1,
        0,
        0,
    )


def test_the_audience_of_a_rule_is_a_read(client_a):
    ProfileFactory(client=client_a, purchases=3)
    ProfileFactory(client=client_a, purchases=0)
    reader = _api(client_a, scope="read")

    answer = reader.post(
        f"{API}/segments/audience",
        {"rule": {"field": "purchases", "op": "gte", "value": 1}},
        format="json",
    )

    assert (answer.status_code, answer.json()["count"]) == (200, 1)


def test_server_side_events_are_checked_like_the_tags_and_spooled(api_a, client_a):
    visitor = visitor_id_issue()
    now = int(time.time() * 1000)
    batch = {
        "visitor": visitor,
        "session": f"{int(time.time()):x}.0123456789ab",
        "sent_at": now,
        "events": [
            {"id": str(uuid.uuid4()), "type": "purchase", "at": now, "order_id": "A1",
             "value": 12.5},
            {"id": "not-a-uuid", "type": "page_view", "at": now},
        ],
    }  # fmt: skip

    accepted = api_a.post(f"{API}/events", batch, format="json")
    refused = api_a.post(f"{API}/events", {**batch, "visitor": "made-up"}, format="json")

    assert accepted.status_code == 202
    assert accepted.json()["accepted"] == 1
    assert accepted.json()["rejected"][0]["index"] == 1
    assert refused.status_code == 400
    lines = [json.loads(line) for path in spool_seal_open() for line in path.read_text().split()]
    assert [(line["type"], line["client"], line["order_id"]) for line in lines] == [
        ("purchase", client_a.pk, "A1")
    ]


def test_an_import_is_uploaded_and_its_progress_read(api_a, client_a):
    mapping = ImportMappingFactory(client=client_a)
    upload = io.BytesIO(b"email,customer\nann@example.com,C1\n")
    upload.name = "customers.csv"

    created = api_a.post(f"{API}/imports", {"mapping": mapping.pk, "file": upload})
    status = api_a.get(f"{API}/imports/{created.json()['id']}")

    assert created.status_code == 202
    assert (status.status_code, status.json()["file_name"]) == (200, "customers.csv")
    assert ImportJob.objects.get().client == client_a


def test_a_profile_is_looked_up_by_visitor_id(api_a, client_a):
    profile = ProfileFactory(client=client_a, purchases=4)

    answer = api_a.get(f"{API}/profiles/{profile.visitor_id}")

    assert (answer.status_code, answer.json()["purchases"]) == (200, 4)


@pytest.mark.parametrize(
    ("role", "status"),
    [(Membership.Role.VIEWER, 403), (Membership.Role.MARKETER, 201), (Membership.Role.ADMIN, 201)],
)
def test_roles_decide_who_writes_and_read_tokens_only_read(client_a, role, status):
    member = MembershipFactory(client=client_a, role=role).user
    api = APIClient()
    api.force_authenticate(member)
    reader = _api(client_a, scope="read")

    by_member = api.post(f"{API}/placements", {"key": "hero", "name": "Hero"}, format="json")
    by_reader = reader.post(f"{API}/placements", {"key": "side", "name": "Side"}, format="json")

    assert (by_member.status_code, by_reader.status_code) == (status, 403)
    assert api.get(f"{API}/placements").status_code == 200


def test_only_a_client_admin_or_a_write_token_uploads_imports(client_a):
    mapping = ImportMappingFactory(client=client_a)
    marketer = MembershipFactory(client=client_a, role=Membership.Role.MARKETER).user
    api = APIClient()
    api.force_authenticate(marketer)
    upload = io.BytesIO(b"email\nann@example.com\n")
    upload.name = "c.csv"

    answer = api.post(f"{API}/imports", {"mapping": mapping.pk, "file": upload})

    assert answer.status_code == 403
    assert ImportJob.objects.count() == 0


def _objects(client):
    """One row of every kind the API serves, for `client`."""
    attachment = AttachmentFactory(campaign__client=client)
    experiment = ExperimentFactory(attachment=attachment)
    version = table_build(campaign_id=attachment.campaign_id)
    profile = ProfileFactory(client=client, email=f"{client.slug}@example.com", purchases=1)
    mapping = ImportMappingFactory(client=client)
    job = ImportJob.objects.create(client=client, mapping=mapping, file_name="x.csv", path="/x")
    email = EmailCampaignFactory(client=client, segments=[attachment.segment])
    mailing = mailing_start(campaign=email)
    suppression = suppression_add(client_id=client.pk, email="gone@example.com", reason="manual")
    return {
        "placements": attachment.campaign.placement_id,
        "contents": attachment.content_id,
        "campaigns": attachment.campaign_id,
        "attachments": attachment.pk,
        "experiments": experiment.pk,
        "segments": attachment.segment_id,
        "table-versions": version.pk,
        "profiles": profile.visitor_id,
        "import-mappings": mapping.pk,
        "imports": job.pk,
        "email-campaigns": email.pk,
        "email-mailings": mailing.pk,
        "email-messages": mailing.messages.get().pk,
        "email-suppressions": suppression.pk,
    }


MODELS = {
    "placements": Placement, "contents": Content, "campaigns": Campaign,
    "attachments": Attachment, "experiments": Experiment, "segments": Segment,
    "table-versions": TableVersion, "profiles": Profile, "import-mappings": ImportMapping,
    "imports": ImportJob, "email-campaigns": EmailCampaign, "email-mailings": EmailMailing,
    "email-messages": EmailMessage, "email-suppressions": EmailSuppression,
}  # fmt: skip
ENDPOINTS = [
    "placements", "contents", "campaigns", "attachments", "experiments", "segments",
    "table-versions", "profiles", "import-mappings", "imports", "email-campaigns",
    "email-mailings", "email-messages", "email-suppressions",
]  # fmt: skip


@pytest.fixture
def two_worlds(client_a, client_b):
    return _objects(client_a), _objects(client_b)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("who", ["write token", "read token", "marketer", "admin"])
def test_another_clients_rows_are_404_and_never_listed(
    client_a, client_b, two_worlds, endpoint, who
):
    mine, theirs = two_worlds
    if who.endswith("token"):
        api = _api(client_a, scope=who.split()[0])
    else:
        role = Membership.Role.MARKETER if who == "marketer" else Membership.Role.ADMIN
        api = APIClient()
        api.force_authenticate(MembershipFactory(client=client_a, role=role).user)
    url = f"{API}/{endpoint}"

    listed = api.get(url).json()["results"]
    lookup = "visitor_id" if endpoint == "profiles" else "id"
    before = MODELS[endpoint].objects.filter(client=client_b).count()
    theirs_url = f"{url}/{theirs[endpoint]}"
    answers = {
        "own": api.get(f"{url}/{mine[endpoint]}").status_code,
        "get": api.get(theirs_url).status_code,
        "patch": api.patch(theirs_url, {"name": "x"}, format="json").status_code,
        "delete": api.delete(theirs_url).status_code,
    }

    ids = [row[lookup] for row in listed]
    assert mine[endpoint] in ids
    assert not MODELS[endpoint].objects.filter(client=client_b, **{f"{lookup}__in": ids}).exists()
    assert answers == {
        "own": 200,
        "get": 404,
        "patch": _refusal(endpoint, who, "patch"),
        "delete": _refusal(endpoint, who, "delete"),
    }
    assert MODELS[endpoint].objects.filter(client=client_b).count() == before


READ_ONLY_ENDPOINTS = {
    "table-versions", "profiles", "import-mappings", "imports", "email-mailings", "email-messages",
}  # fmt: skip
NO_CHANGE = {("experiments", "delete"), ("email-suppressions", "patch")}


def _refusal(endpoint, who, method):
    """What a write to another client's row gets: permissions are checked first (403), then
    the method (405), then the row, which is not found (404)."""
    if who == "read token" or (endpoint == "imports" and who == "marketer"):
        return 403
    if endpoint in READ_ONLY_ENDPOINTS or (endpoint, method) in NO_CHANGE:
        return 405
    return 404


def test_a_foreign_key_to_another_clients_row_does_not_exist(api_a, client_a, client_b):
    campaign = CampaignFactory(client=client_a)
    theirs = SegmentFactory(client=client_b)
    content = ContentFactory(client=client_a)

    answer = api_a.post(
        f"{API}/attachments",
        {"campaign": campaign.pk, "segment": theirs.pk, "content": content.pk, "priority": 3},
        format="json",
    )

    assert answer.status_code == 400
    assert answer.json() == {"segment": [f'Invalid pk "{theirs.pk}" - object does not exist.']}
    assert Attachment.objects.count() == 0


def test_explain_and_publish_of_another_clients_rows_are_404(api_a, client_b):
    campaign = CampaignFactory(client=client_b)
    version = table_build(campaign_id=campaign.pk, publish=False)
    explain = reverse("segmentation:campaign-explain", args=[campaign.pk])

    answers = [
        api_a.get(explain, {"visitor": "anyone"}).status_code,
        api_a.post(f"{API}/table-versions/{version.pk}/publish").status_code,
        api_a.post(f"{API}/campaigns/{campaign.pk}/builds", {}, format="json").status_code,
    ]

    assert answers == [404, 404, 404]
    assert TableVersion.objects.get(pk=version.pk).status == "ready"


def test_the_schema_and_its_docs_are_served_without_any_other_site(api_a, client):
    schema = api_a.get(f"{API}/schema", {"format": "json"})
    docs = api_a.get(f"{API}/docs")

    assert schema.status_code == 200
    assert "/api/v1/campaigns/{id}/builds" in json.loads(schema.content)["paths"]
    html = docs.content.decode()
    assert docs.status_code == 200
    assert "drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn." not in html and "unpkg" not in html


@pytest.mark.parametrize(
    ("endpoint", "field"), [("table-versions", "campaign"), ("email-mailings", "campaign")]
)
def test_a_filter_by_another_clients_row_tells_nothing_of_it(api_a, client_b, endpoint, field):
    from tests.factories import CampaignFactory, EmailCampaignFactory

    theirs = (EmailCampaignFactory if endpoint == "email-mailings" else CampaignFactory)(
        client=client_b
    )
    nobodys = theirs.pk + 1000

    foreign = api_a.get(f"{API}/{endpoint}", {field: theirs.pk})
    unknown = api_a.get(f"{API}/{endpoint}", {field: nobodys})

    assert (foreign.status_code, unknown.status_code) == (400, 400)
    assert foreign.json() == {
        field: ["Select a valid choice. That choice is not one of the available choices."]
    }
    assert unknown.json() == foreign.json()
