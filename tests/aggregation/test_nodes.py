import json

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from aggregation.tasks import consolidate

pytestmark = pytest.mark.django_db


def test_each_node_gets_a_beat_entry_for_its_own_queue():
    call_command("spool_node", node="web-1")
    call_command("spool_node", node="web-2", every_minutes=2)
    call_command("spool_node", node="web-1")  # again: nothing new

    entries = PeriodicTask.objects.filter(name__startswith="Consolidate the spool of")
    assert sorted((e.name, e.queue, e.interval.every) for e in entries) == [
        ("Consolidate the spool of web-1", "spool.web-1", 5),
        ("Consolidate the spool of web-2", "spool.web-2", 2),
    ]


def test_a_consolidation_sent_to_a_node_queue_waits_there_for_that_nodes_worker():
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)

    consolidate.apply_async(queue="spool.web-2")

    [raw] = broker.lrange("spool.web-2", 0, -1)
    assert json.loads(raw)["headers"]["task"] == "aggregation.consolidate"
    assert broker.llen("celery") == 0
