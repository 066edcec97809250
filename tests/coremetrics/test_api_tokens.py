"""API tokens (issue 8): per client, scoped, shown once, revocable; a token sees its client only."""

import pytest
from django.urls import reverse

from coremetrics.models import ApiToken, Membership
from coremetrics.tokens import api_token_create
from segmentation.services import table_build
from tests.factories import AttachmentFactory, MembershipFactory, ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign():
    attachment = AttachmentFactory(segment__rule={"field": "purchases", "op": "gte", "value": 1})
    ProfileFactory(client=attachment.client, visitor_id="buyer", purchases=1)
    table_build(campaign_id=attachment.campaign_id)
    return attachment.campaign


def _explain(client, campaign, key, method="get"):
    url = reverse("segmentation:campaign-explain", args=[campaign.pk])
    return getattr(client, method)(
        url, {"visitor": "buyer"} if method == "get" else None,
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )  # fmt: skip


def test_a_token_reads_its_own_clients_campaigns_only(client, campaign):
    _, own = api_token_create(client=campaign.client, name="export", scope="read")
    other_token, other = api_token_create(
        client=MembershipFactory().client, name="rival", scope="write"
    )

    answer = _explain(client, campaign, own)
    sealed = _explain(client, campaign, other)

    assert answer.status_code == 200
    assert answer.json()["served"]["name"] == campaign.attachments.get().content.name
    assert sealed.status_code == 404
    other_token.refresh_from_db()
    assert other_token.last_used_at is not None


def test_a_read_token_cannot_write_and_a_bad_or_revoked_key_is_refused(client, campaign):
    token, key = api_token_create(client=campaign.client, name="export", scope="read")
    _, writer = api_token_create(client=campaign.client, name="sync", scope="write")

    refused_write = _explain(client, campaign, key, method="post")
    allowed_write = _explain(client, campaign, writer, method="post")
    wrong = _explain(client, campaign, key + "x")
    ApiToken.objects.filter(pk=token.pk).update(revoked_at="2026-11-01T00:00:00Z")
    revoked = _explain(client, campaign, key)

    assert (refused_write.status_code, refused_write.json()) == (
        403,
        {"detail": "this API token may only read"},
    )
    assert allowed_write.status_code == 405  # past the scope check: no write on this endpoint
    assert (wrong.status_code, revoked.status_code) == (401, 401)
    assert wrong["WWW-Authenticate"] == "Bearer"


def test_only_a_clients_admin_creates_tokens_and_sees_the_key_once(client, campaign):
    url = reverse("admin:coremetrics_apitoken_add")
    marketer = MembershipFactory(client=campaign.client, role=Membership.Role.MARKETER).user
    admin = MembershipFactory(client=campaign.client, role=Membership.Role.ADMIN).user

    client.force_login(marketer)
    refused = client.post(url, {"name": "export", "scope": "read"})
    client.force_login(admin)
    created = client.post(url, {"name": "export", "scope": "read"}, follow=True)

    assert refused.status_code == 403
    [token] = ApiToken.objects.all()
    [message] = [str(m) for m in created.context["messages"] if str(m).startswith("The key")]
    key = message.rsplit(" ", 1)[1]
    assert message.startswith("The key of export, shown this once: cm_")
    assert (token.client, token.prefix) == (campaign.client, key.split("_")[1])
    assert key not in token.key_hash
    assert _explain(client, campaign, key).status_code == 200
