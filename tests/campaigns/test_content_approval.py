"""Script and HTML content: a client admin approves it before it serves; every change to it is
kept in the audit log."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns.models import Content, ContentChange
from campaigns.selectors import content_answer
from coremetrics.models import Membership
from coremetrics.tokens import api_token_create
from delivery.tables import local_tables
from segmentation.services import table_build
from tests.factories import AttachmentFactory, MembershipFactory, ProfileFactory

pytestmark = pytest.mark.django_db

SCRIPT = {
    "name": "Offer script",
    "type": "script",
    "url": "https://cdn.example/offer.js",
    "click_url": "",
    "html": "",
    "alt_text": "",
}


def _log(content_name):
    return list(
        ContentChange.objects.filter(content_name=content_name)
        .order_by("at", "id")
        .values_list("action", "by", "is_approved")
    )


def test_a_marketers_script_waits_for_an_admins_approval(client, client_a):
    marketer = MembershipFactory(client=client_a, role=Membership.Role.MARKETER).user
    admin = MembershipFactory(client=client_a, role=Membership.Role.ADMIN).user
    client.force_login(marketer)
    add = client.post(reverse("admin:campaigns_content_add"), SCRIPT)
    script = Content.objects.get(name="Offer script")
    changelist = client.get(reverse("admin:campaigns_content_changelist"))

    assert add.status_code == 302
    assert (script.client, script.is_approved, content_answer(script)) == (client_a, False, None)
    actions = [name for name, _ in changelist.context["action_form"].fields["action"].choices]
    assert "approve" not in actions

    client.force_login(admin)
    approve = client.post(
        reverse("admin:campaigns_content_changelist"),
        {"action": "approve", "_selected_action": [script.pk]},
    )
    script.refresh_from_db()

    assert approve.status_code == 302
    assert script.is_approved is True
    assert content_answer(script)["url"] == "https://cdn.example/offer.js"

    client.force_login(marketer)
    changed = {**SCRIPT, "url": "https://cdn.example/other.js"}
    client.post(reverse("admin:campaigns_content_change", args=[script.pk]), changed)
    script.refresh_from_db()

    assert script.is_approved is False
    assert _log("Offer script") == [
        ("created", marketer.username, False),
        ("approved", admin.username, True),
        ("changed", marketer.username, False),
    ]
    last = ContentChange.objects.filter(action="changed").get()
    assert (last.before["url"], last.after["url"]) == (
        "https://cdn.example/offer.js",
        "https://cdn.example/other.js",
    )


def test_an_admins_own_script_serves_at_once_and_images_need_no_approval(client, client_a):
    admin = MembershipFactory(client=client_a, role=Membership.Role.ADMIN).user
    client.force_login(admin)

    client.post(reverse("admin:campaigns_content_add"), SCRIPT)
    client.post(
        reverse("admin:campaigns_content_add"),
        {**SCRIPT, "name": "Banner", "type": "image", "url": "https://cdn.example/b.png"},
    )

    assert dict(Content.objects.values_list("name", "is_approved")) == {
        "Offer script": True,
        "Banner": True,
    }
    assert _log("Offer script") == [("created", admin.username, True)]
    assert _log("Banner") == []


def test_an_unapproved_attachment_is_left_out_of_the_table(client_a):
    attachment = AttachmentFactory(
        campaign__client=client_a, content__type="html", content__html="<p>Hi</p>",
        content__url="", content__is_approved=False,
    )  # fmt: skip
    buyer = ProfileFactory(client=client_a, purchases=1)

    table_build(campaign_id=attachment.campaign_id)
    placement = (
        local_tables().client(client_a.public_key).placements[attachment.campaign.placement.key]
    )

    assert placement.table.visitors.get(buyer.visitor_id) is None


def test_html_sent_through_the_api_waits_for_approval_and_is_logged(client_a):
    _, key = api_token_create(client=client_a, name="shop system", scope="write")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    created = api.post(
        "/api/v1/contents", {"name": "Promo", "type": "html", "html": "<b>Sale</b>"}, format="json"
    )
    api.patch(f"/api/v1/contents/{created.json()['id']}", {"html": "<b>Sale!</b>"}, format="json")

    assert (created.status_code, created.json()["is_approved"]) == (201, False)
    assert _log("Promo") == [
        ("created", "API token 'shop system'", False),
        ("changed", "API token 'shop system'", False),
    ]


def test_content_in_use_cannot_be_deleted_and_leaves_no_audit_row(client_a):
    attachment = AttachmentFactory(
        campaign__client=client_a, content__type="script", content__url="https://cdn.example/a.js"
    )
    _, key = api_token_create(client=client_a, name="shop system", scope="write")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    answer = api.delete(f"/api/v1/contents/{attachment.content_id}")

    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("still in use by: ")
    assert Content.objects.filter(pk=attachment.content_id).exists()
    assert not ContentChange.objects.filter(action="deleted").exists()
