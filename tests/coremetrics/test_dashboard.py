"""The console's home: one client's dashboard, and nothing of another client's."""

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.models import EmailMailing
from segmentation.models import TableVersion
from tests.factories import CampaignFactory, ContentFactory, EmailCampaignFactory, EventFactory

pytestmark = pytest.mark.django_db


def test_a_marketer_sees_their_clients_traffic_campaigns_and_problems(
    client, client_a, client_b, marketer
):
    CampaignFactory(client=client_a, name="Spring sale")
    CampaignFactory(client=client_b, name="Bravo secret")
    ContentFactory(client=client_a, name="Tracking pixel script", type="script", is_approved=False)
    TableVersion.objects.create(
        client=client_a,
        campaign=CampaignFactory(client=client_a, name="Broken"),
        number=1,
        status=TableVersion.Status.FAILED,
        error="RuleError: rule.field: not a field",
    )
    EventFactory(client=client_a, type="purchase", value="30.00", order_id="o1",
                 occurred_at=timezone.now())  # fmt: skip
    for client_, name in ((client_a, "November news"), (client_b, "Bravo mailing")):
        EmailMailing.objects.create(
            client=client_, campaign=EmailCampaignFactory(client=client_, name=name),
            occurrence=timezone.now(), status="done", recipients=12,
        )  # fmt: skip
    EventFactory(client=client_b, type="purchase", value="999.00", order_id="o2",
                 occurred_at=timezone.now())  # fmt: skip

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200
    dashboard = response.context["dashboard"]
    assert dashboard["client"] == client_a
    assert (
        dashboard["activity"]["totals"]["orders"],
        dashboard["activity"]["totals"]["revenue"],
    ) == (
        1,
        30,
    )
    assert [entry["campaign"].name for entry in dashboard["campaigns"]] == ["Broken", "Spring sale"]
    assert dashboard["problems"] == [
        "The build of Broken (version 1) failed: RuleError: rule.field: not a field",
        "Tracking pixel script waits for a client admin's approval",
        "Broken has no published table: everyone sees its default",
        "Spring sale has no published table: everyone sees its default",
    ]
    assert [mailing.campaign.name for mailing in dashboard["mailings"]] == ["November news"]
    html = response.content.decode()
    assert "Spring sale" in html and "Bravo secret" not in html
    assert "November news</a>: done, 12 recipients" in html and "Bravo mailing" not in html


def test_a_superuser_picks_the_client_whose_dashboard_to_see(client, client_a, client_b, superuser):
    CampaignFactory(client=client_b, name="Bravo campaign")

    response = client.get(reverse("admin:index"), {"client": client_b.pk})

    assert response.context["dashboard"]["client"] == client_b
    assert "Bravo campaign" in response.content.decode()
