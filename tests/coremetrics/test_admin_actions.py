"""The console's "run now" paths put real Celery messages on the Redis broker."""

import json

import pytest
import redis
from django.conf import settings
from django.contrib.messages import get_messages
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from coremetrics.celery import app as celery_app
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db

QUEUE = "celery"  # kombu's Redis transport keeps the default queue in a list of this name


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def queued() -> list[tuple[str, str]]:
    """(task name, args repr) of every message waiting in the default queue, oldest first."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    raw_messages = reversed(broker.lrange(QUEUE, 0, -1))  # LPUSH: newest at the head
    headers = [json.loads(raw)["headers"] for raw in raw_messages]
    return [(header["task"], header["argsrepr"]) for header in headers]


def test_celery_app_uses_the_brokers_from_django_settings():
    assert settings.CELERY_BROKER_URL == settings.REDIS_URL
    assert celery_app.conf.broker_url == settings.CELERY_BROKER_URL
    assert queued() == []


def test_build_tables_now_queues_one_build_per_selected_campaign(
    client, client_a, marketer, django_capture_on_commit_callbacks
):
    first, second = CampaignFactory(client=client_a), CampaignFactory(client=client_a)
    CampaignFactory(client=client_a)  # not selected
    data = {
        "action": "build_tables_now",
        "index": "0",
        "_selected_action": [str(first.pk), str(second.pk)],
    }

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(reverse("admin:campaigns_campaign_changelist"), data)
        assert queued() == []  # nothing leaves before the transaction commits

    assert response.status_code == 302
    assert messages_of(response) == ["Queued table builds for 2 campaign(s); see Table versions."]
    assert len(callbacks) == 2
    assert sorted(queued()) == sorted(
        [
            ("segmentation.build_table", f"({first.pk},)"),
            ("segmentation.build_table", f"({second.pk},)"),
        ]
    )


def test_build_tables_now_ignores_other_clients_campaigns(
    client, client_a, client_b, marketer, django_capture_on_commit_callbacks
):
    foreign = CampaignFactory(client=client_b)
    data = {"action": "build_tables_now", "index": "0", "_selected_action": [str(foreign.pk)]}

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(reverse("admin:campaigns_campaign_changelist"), data)

    assert response.status_code == 302
    # The admin filters the selection through the scoped queryset and runs the action on none.
    assert messages_of(response) == ["Queued table builds for 0 campaign(s); see Table versions."]
    assert callbacks == []
    assert queued() == []


def test_build_tables_now_with_own_and_foreign_campaign_queues_only_own(
    client, client_a, client_b, marketer, django_capture_on_commit_callbacks
):
    own = CampaignFactory(client=client_a)
    foreign = CampaignFactory(client=client_b)
    data = {
        "action": "build_tables_now",
        "index": "0",
        "_selected_action": [str(own.pk), str(foreign.pk)],
    }

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:campaigns_campaign_changelist"), data)

    assert queued() == [("segmentation.build_table", f"({own.pk},)")]


def test_superuser_consolidate_now_queues_one_consolidation(
    client, superuser, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(reverse("admin:aggregation-consolidate-now"))

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:aggregation_consolidationrun_changelist")
    assert messages_of(response) == ["Consolidation queued."]
    assert len(callbacks) == 1
    assert queued() == [("aggregation.consolidate", "()")]


def test_consolidate_now_button_is_on_the_runs_page(client, superuser):
    response = client.get(reverse("admin:aggregation_consolidationrun_changelist"))

    page = response.content.decode()
    assert response.status_code == 200
    assert f'action="{reverse("admin:aggregation-consolidate-now")}"' in page
    assert page.count('id="consolidate-now"') == 1


def test_consolidate_now_by_get_queues_nothing(
    client, superuser, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.get(reverse("admin:aggregation-consolidate-now"))

    assert response.status_code == 302
    assert callbacks == []
    assert queued() == []


def test_marketer_consolidate_now_queues_nothing(
    client, marketer, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(reverse("admin:aggregation-consolidate-now"))

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:aggregation_consolidationrun_changelist")
    assert messages_of(response) == []
    assert callbacks == []
    assert queued() == []


def test_beat_admin_lists_the_seeded_schedule(client, superuser):
    response = client.get(reverse("admin:django_celery_beat_periodictask_changelist"))

    assert response.status_code == 200
    assert sorted(
        (task.name, task.task, task.interval.every, task.interval.period, task.enabled)
        for task in response.context["cl"].result_list
    ) == [
        ("Consolidate the spool", "aggregation.consolidate", 5, "minutes", True),
        ("Rebuild the lookup tables", "segmentation.build_tables", 6, "hours", True),
        ("Resume stalled email mailings", "campaigns.resume_mailings", 5, "minutes", True),
    ]


@pytest.mark.parametrize("name", ["Consolidate the spool", "Rebuild the lookup tables"])
def test_superuser_changes_a_schedules_interval(client, superuser, name):
    task = PeriodicTask.objects.get(name=name)
    # django-celery-beat has no factory here; one new interval for the form to pick.
    every_ten_minutes = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    url = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
    form = client.get(url).context["adminform"].form
    data = {}
    for field_name in form.fields:
        value = form[field_name].value()
        if value is None or value is False:
            continue
        data[field_name] = "on" if value is True else value
    data["interval"] = str(every_ten_minutes.pk)

    response = client.post(url, data)

    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.name, task.interval_id, task.enabled) == (name, every_ten_minutes.pk, True)


def test_marketer_cannot_open_the_beat_schedule(client, marketer):
    response = client.get(reverse("admin:django_celery_beat_periodictask_changelist"))

    assert response.status_code == 403


def test_viewer_cannot_run_build_tables_now(client, client_a, viewer, on_commit):
    campaign = CampaignFactory(client=client_a)
    url = reverse("admin:campaigns_campaign_changelist")

    with on_commit():
        response = client.post(
            url, {"action": "build_tables_now", "_selected_action": [campaign.pk]}
        )

    assert response.status_code == 200
    action_form = response.context["action_form"]
    offered = [name for name, _ in action_form.fields["action"].choices] if action_form else []
    assert "build_tables_now" not in offered
    assert queued() == []


def test_saving_a_segment_queues_a_rebuild_of_its_clients_tables(
    client, client_a, marketer, on_commit
):
    url = reverse("admin:segmentation_segment_add")
    rule = json.dumps({"field": "visits", "op": "gt", "value": 3})

    with on_commit():
        response = client.post(url, {"name": "Loyal", "description": "", "rule": rule})

    assert response.status_code == 302
    assert queued() == [("segmentation.build_tables", f"({client_a.pk},)")]


def test_saving_a_client_publishes_its_manifest_at_once(client, superuser, on_commit):
    from delivery.tables import local_tables
    from tests.factories import ClientFactory

    shop = ClientFactory()
    url = reverse("admin:coremetrics_client_change", args=[shop.pk])
    data = {
        "name": shop.name,
        "slug": shop.slug,
        "timezone": "UTC",
        "consent_mode": "required",
        "cookie_domain": "",
        "tag_timeout_ms": 1500,
        "is_active": "on",
        "sites-TOTAL_FORMS": "1",
        "sites-INITIAL_FORMS": "0",
        "sites-MIN_NUM_FORMS": "0",
        "sites-MAX_NUM_FORMS": "1000",
        "sites-0-origin": "https://portal.example",
    }

    with on_commit():
        response = client.post(url, data)

    assert response.status_code == 302
    view = local_tables().client(shop.public_key)
    assert (view.origins, view.tag["consent"]) == (
        frozenset({"https://portal.example"}),
        "required",
    )


def test_the_root_address_leads_to_the_console(client):
    response = client.get("/")

    assert (response.status_code, response["Location"]) == (302, reverse("admin:index"))
