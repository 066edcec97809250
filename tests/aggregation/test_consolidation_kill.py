"""Killing the loader at any point, then running it again, loads every event exactly once."""

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from aggregation.models import Event, Profile
from aggregation.records import record_new
from aggregation.services import profiles_rebuild
from aggregation.spool import SpoolWriter, spool_paths
from delivery.identity import visitor_id_issue
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 10, 1, tzinfo=UTC)
KINDS = ["page_view", "product_view", "cart_add", "purchase"]


def _spool(client_id: int, root: Path, *, files: int, per_file: int) -> None:
    rng = random.Random(5)
    visitors = [visitor_id_issue() for _ in range(per_file // 10)]
    for _ in range(files):
        writer = SpoolWriter(root, 1 << 30, 3600)
        records = []
        for index in range(per_file):
            kind = KINDS[index % 4]
            records.append(
                record_new(
                    client_id=client_id,
                    kind=kind,
                    visitor_id=rng.choice(visitors),
                    session_id=f"s{rng.randrange(500)}",
                    occurred_at=START + timedelta(seconds=rng.randrange(86400 * 20)),
                    url="https://shop.example/",
                    product_id="p1",
                    order_id=f"o{index}" if kind == "purchase" else "",
                    value="10.00" if kind == "purchase" else None,
                )
            )
        writer.append(records)
        writer.close()


def _consolidate_process(settings) -> subprocess.Popen:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SPOOL_DIR": str(settings.SPOOL_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "consolidate"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="kills a loader using COPY")
def test_killed_loader_rerun_loads_every_event_exactly_once(settings):
    client = ClientFactory()
    files, per_file = 6, 8000
    _spool(client.pk, Path(settings.SPOOL_DIR), files=files, per_file=per_file)
    closed = spool_paths()["closed"]
    rng = random.Random(11)
    kills = 0

    # Kill the loader again and again, each time a moment after it has made some progress.
    while kills < 8 and any(closed.glob("*.jsonl")):
        before = len(list(closed.glob("*.jsonl")))
        process = _consolidate_process(settings)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if len(list(closed.glob("*.jsonl"))) < before or Event.objects.exists():
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()

    final = _consolidate_process(settings)
    output = final.communicate(timeout=300)[0].decode()

    assert final.returncode == 0, output
    assert kills >= 3
    assert Event.objects.filter(client=client).count() == files * per_file
    assert list(closed.glob("*.jsonl")) == []
    assert len(list(spool_paths()["archive"].glob("*.jsonl.zst"))) == files
    # Profiles equal a fresh computation from the events.
    loaded = {
        p.visitor_id: (p.visits, p.page_views, p.purchases, p.total_spent)
        for p in Profile.objects.filter(client=client)
    }
    Profile.objects.all().delete()
    profiles_rebuild(client_id=client.pk, visitor_ids=set(loaded))
    fresh = {
        p.visitor_id: (p.visits, p.page_views, p.purchases, p.total_spent)
        for p in Profile.objects.filter(client=client)
    }
    assert loaded == fresh
