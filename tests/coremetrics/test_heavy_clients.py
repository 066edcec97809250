"""Marking a client heavy (routed by campaign over the delivery nodes) is the operator's call."""

import pytest
from django.urls import reverse

from coremetrics.models import Client, Membership
from tests.factories import ClientFactory, MembershipFactory

pytestmark = pytest.mark.django_db


def _form(client: Client, **changes) -> dict:
    return {
        "name": client.name,
        "slug": client.slug,
        "timezone": "UTC",
        "consent_mode": client.consent_mode,
        "cookie_domain": "",
        "tag_timeout_ms": 1500,
        "is_active": "on",
        "sites-TOTAL_FORMS": "0",
        "sites-INITIAL_FORMS": "0",
        "sites-MIN_NUM_FORMS": "0",
        "sites-MAX_NUM_FORMS": "1000",
        **changes,
    }


def test_superuser_marks_a_client_heavy(client, superuser):
    shop = ClientFactory()

    response = client.post(
        reverse("admin:coremetrics_client_change", args=[shop.pk]), _form(shop, is_heavy="on")
    )

    assert response.status_code == 302
    shop.refresh_from_db()
    assert shop.is_heavy is True


def test_superuser_lists_the_heavy_clients(client, superuser):
    heavy = ClientFactory(is_heavy=True)
    ClientFactory()

    response = client.get(reverse("admin:coremetrics_client_changelist"), {"is_heavy__exact": "1"})

    assert [row.pk for row in response.context["cl"].result_list] == [heavy.pk]


def test_client_admin_sees_but_cannot_change_heavy(client):
    membership = MembershipFactory(role=Membership.Role.ADMIN)
    client.force_login(membership.user)
    shop = membership.client
    url = reverse("admin:coremetrics_client_change", args=[shop.pk])

    page = client.get(url)
    response = client.post(url, _form(shop, name="Renamed", is_heavy="on"))

    assert "is_heavy" in page.context["adminform"].readonly_fields
    assert response.status_code == 302
    shop.refresh_from_db()
    assert (shop.name, shop.is_heavy) == ("Renamed", False)
