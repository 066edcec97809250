import pytest
from django.urls import reverse

from segmentation.services import table_build
from tests.factories import AttachmentFactory, ProfileFactory

pytestmark = pytest.mark.django_db


def test_query_answers_from_published_table_without_database(client, django_assert_num_queries):
    attachment = AttachmentFactory()
    campaign = attachment.campaign
    buyer = ProfileFactory(client=campaign.client, purchases=2)
    table_build(campaign_id=campaign.pk)
    url = reverse("delivery:query")
    params = {"k": campaign.client.public_key, "v": buyer.visitor_id, "p": campaign.placement.key}

    with django_assert_num_queries(0):
        response = client.get(url, params)

    assert response.status_code == 200
    [answer] = response.json()["placements"]
    assert answer["content"]["id"] == attachment.content_id
    assert answer["source"] == "table"
    assert answer["version"] == 1
