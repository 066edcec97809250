import base64
import hashlib
import json
import re

import pytest
from django.urls import reverse

from delivery.services import manifest_publish
from delivery.tag import client_tag_config, tag_body, tag_config, tag_snippet
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    campaign = CampaignFactory(client__cookie_domain="shop.example", client__tag_timeout_ms=900)
    manifest_publish(client_id=campaign.client_id)
    return campaign.client


def _config(body: bytes) -> dict:
    return json.loads(re.match(rb"var __cmConfig=(\{.*?\});\n", body).group(1))


def test_tag_carries_the_clients_settings_and_short_caching(client, shop):
    response = client.get(reverse("delivery:tag", args=[shop.public_key]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["Cache-Control"] == "public, max-age=300, stale-while-revalidate=86400"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert _config(response.content) == {
        "key": shop.public_key,
        "cookieDays": 395,
        "idleMinutes": 30,
        "cookieDomain": "shop.example",
        "consent": "implied",
        "timeout": 900,
    }


def test_versioned_tag_is_immutable_and_matches_its_integrity_hash(client, shop):
    served = tag_body(client_tag_config(shop))

    response = client.get(f"/t/v1/{shop.public_key}.{served.version}.js")

    assert response["Cache-Control"] == "public, max-age=31536000, immutable"
    digest = base64.b64encode(hashlib.sha384(response.content).digest()).decode()
    assert served.integrity == f"sha384-{digest}"
    assert served.version == hashlib.sha256(response.content).hexdigest()[:12]


def test_a_pinned_version_keeps_working_after_the_settings_change(client, shop):
    current = client.get(reverse("delivery:tag", args=[shop.public_key]))
    old_version = current["ETag"].strip('"')
    shop.tag_timeout_ms = 2500
    shop.save(update_fields=["tag_timeout_ms"])
    manifest_publish(client_id=shop.pk)

    pinned = client.get(f"/t/v1/{shop.public_key}.{old_version}.js")
    latest = client.get(reverse("delivery:tag", args=[shop.public_key]))

    assert (pinned.status_code, pinned.content) == (200, current.content)
    assert pinned["Cache-Control"] == "public, max-age=31536000, immutable"
    assert _config(latest.content)["timeout"] == 2500
    assert latest["ETag"] != current["ETag"]


def test_retired_version_and_unknown_client_are_404(client, shop):
    retired = client.get(f"/t/v1/{shop.public_key}.0123456789ab.js")
    unknown = client.get("/t/v1/cm_nobody.js")
    malformed = client.get(f"/t/v1/{shop.public_key}.js.map")

    assert (retired.status_code, retired.content) == (
        404,
        b"/* coremetrics: tag version retired; paste the new snippet */",
    )
    assert (unknown.status_code, unknown.content) == (404, b"/* coremetrics: unknown client key */")
    assert malformed.status_code == 404


def test_pinned_snippet_names_the_version_and_its_hash():
    pinned = tag_body(
        tag_config(public_key="cm_key", cookie_domain="", consent_mode="implied", timeout_ms=1500)
    )

    snippet = tag_snippet(base_url="https://cm.example/", public_key="cm_key", pinned=pinned)
    plain = tag_snippet(base_url="https://cm.example/", public_key="cm_key")

    assert f'"https://cm.example/t/v1/cm_key.{pinned.version}.js","{pinned.integrity}"' in snippet
    assert '"https://cm.example/t/v1/cm_key.js",""' in plain
    assert snippet.startswith("<script>\n") and snippet.endswith("\n</script>")
