"""Files loaded side by side (CONSOLIDATION_WORKERS) count every event once and make the
profiles a rebuild from the events makes (A3, A5)."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from aggregation.models import ConsolidationRun, Event, Profile
from aggregation.services import spool_consolidate
from aggregation.spool import SpoolWriter, spool_paths
from aggregation.tasks import consolidate
from coremetrics.models import Client
from delivery.identity import visitor_id_issue
from delivery.models import Visitor
from tests.aggregation.test_profiles_rebuild import _event, _snapshot
from tests.factories import ClientFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="parallel loads: PostgreSQL"),
]
START = datetime(2026, 9, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _spool_files(settings, client_id: int, *, files: int, events: int, visitors: int) -> None:
    """Closed spool files of `events` events each, from `visitors` visitors."""
    for number in range(files):
        writer = SpoolWriter(settings.SPOOL_DIR, 1 << 30, 3600)
        writer.append(
            _event(random.Random(number), client_id, f"v{index % visitors}", START)
            for index in range(events)
        )
        writer.close()


def test_files_loaded_side_by_side_equal_a_rebuild(settings):
    settings.CONSOLIDATION_WORKERS = 2
    rng = random.Random(8)
    clients = [ClientFactory(), ClientFactory()]
    visitors = [visitor_id_issue() for _ in range(40)]
    sent = 0
    resent = None
    # Six files, the same visitors in all of them (so two loads meet on their profiles), the
    # events of each out of time order. One event sent twice, in two files.
    for number in range(6):
        records = [
            _event(
                rng,
                rng.choice(clients).pk,
                rng.choice(visitors),
                START + timedelta(minutes=rng.randrange(9000)),
            )
            for _ in range(300)
        ]
        sent += len(records)
        if number == 1:
            resent = records[0]
        if number == 4:
            records.append(resent)
        writer = SpoolWriter(settings.SPOOL_DIR, 1 << 30, 3600)
        writer.append(records)
        writer.close()
    assert len(list(spool_paths()["closed"].glob("*.jsonl"))) == 6

    run = spool_consolidate()

    assert (run.status, run.error, run.files) == ("done", "", 6)
    assert (run.loaded, run.duplicates) == (sent, 1)
    assert Event.objects.count() == sent
    incremental = {client.pk: _snapshot(client) for client in clients}
    seen = set(Visitor.objects.values_list("client_id", "visitor_id", "last_seen_at"))
    Profile.objects.all().delete()
    for client in clients:
        call_command("rebuild_profiles", client=client.pk)
    assert {client.pk: _snapshot(client) for client in clients} == incremental
    assert set(Visitor.objects.values_list("client_id", "visitor_id", "last_seen_at")) == seen
    assert sum(len(profiles) for profiles in incremental.values()) > 40


def test_a_celery_prefork_worker_loads_files_side_by_side(settings):
    """Production runs consolidation in a Celery worker's (daemonic) pool process: its loads
    side by side are billiard processes, which such a process may start (multiprocessing's
    may not)."""
    settings.CONSOLIDATION_WORKERS = 2
    client = ClientFactory()
    _spool_files(settings, client.pk, files=3, events=500, visitors=40)
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/"
        f"{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "SPOOL_DIR": str(settings.SPOOL_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
        "CONSOLIDATION_WORKERS": "2",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "coremetrics", "worker", "--pool", "prefork",
         "--concurrency", "1", "--queues", "celery", "--loglevel", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        consolidate.delay()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            run = ConsolidationRun.objects.exclude(status="running").first()
            if run:
                break
            time.sleep(0.2)
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0].decode()

    assert run is not None, output
    assert (run.status, run.error, run.files, run.loaded) == ("done", "", 3, 1500)
    assert Event.objects.filter(client=client).count() == 1500


def test_deleting_a_client_waits_for_the_load_of_its_events_then_takes_them():
    """Events have no foreign key constraint: a load holds its clients instead, and a client's
    deletion waits for it, so that the events it committed go with the client."""
    from aggregation.services.consolidation import ClientGone, _clients_hold

    client = ClientFactory()
    gone = ClientFactory()
    gone_id = gone.pk
    gone.delete()
    with pytest.raises(ClientGone, match=f"client {gone_id} was deleted"), transaction.atomic():
        _clients_hold({client.pk, gone_id})

    held, deleted = threading.Event(), threading.Event()
    load_may_commit = threading.Event()

    def load() -> None:
        try:
            with transaction.atomic():
                assert _clients_hold({client.pk}) == {client.pk}
                Event.objects.create(
                    client_id=client.pk,
                    event_id="00000000-0000-4000-8000-000000000001",
                    type="page_view",
                    visitor_id="v1",
                    occurred_at=START,
                    received_at=START,
                )
                held.set()
                load_may_commit.wait(10)
        finally:
            connection.close()

    def delete() -> None:
        try:
            Client.objects.get(pk=client.pk).delete()
            deleted.set()
        finally:
            connection.close()

    loader = threading.Thread(target=load)
    loader.start()
    assert held.wait(10)
    deleter = threading.Thread(target=delete)
    deleter.start()
    time.sleep(0.5)
    assert not deleted.is_set()  # waiting for the load

    load_may_commit.set()
    loader.join(10)
    deleter.join(10)

    assert deleted.is_set()
    assert not Event.objects.filter(client_id=client.pk).exists()


def test_a_file_that_kills_its_loader_fails_alone(settings, monkeypatch):
    """A loader that dies (out of memory, killed) takes the pool down; every file it did not
    finish is loaded again alone, so only the file that kills its own loader fails and counts
    towards quarantine."""
    from aggregation.services import consolidation

    settings.CONSOLIDATION_WORKERS = 2
    client = ClientFactory()
    _spool_files(settings, client.pk, files=4, events=200, visitors=10)
    closed = spool_paths()["closed"]
    culprit = sorted(closed.glob("*.jsonl"))[1]
    real_load = consolidation._file_load_kept

    def load_or_die(path):
        if path.name == culprit.name:
            os._exit(9)  # in the loader process: as the kernel's OOM killer would end it
        return real_load(path)

    monkeypatch.setattr(consolidation, "_file_load_kept", load_or_die)  # inherited by fork
    run = spool_consolidate()

    assert (run.status, run.files, run.loaded) == ("failed", 3, 600)
    assert run.error.startswith(f"{culprit.name}: its loader died")
    assert sorted(path.name for path in closed.iterdir()) == [
        culprit.name,
        f"{culprit.name}.attempts",
    ]
    assert (closed / f"{culprit.name}.attempts").read_text() == "1"
    assert Event.objects.filter(client=client).count() == 600


def test_a_loader_takes_signals_as_a_plain_process_not_as_celery_s_pool_process():
    """Celery's pool process turns SIGTERM into SystemExit, which a pool's worker loop would
    catch and go on loading files the consolidation has given up on."""
    from aggregation.services.consolidation import _loaders

    def celery_like(signum, frame):
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, celery_like)
    try:
        with _loaders(1) as pool:
            handler = pool.submit(signal.getsignal, signal.SIGTERM).result()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert handler == signal.SIG_DFL


def test_a_file_loaded_by_a_loader_that_died_before_handing_over_is_loaded_again(
    settings, monkeypatch, tmp_path
):
    """The consolidation removes a file once it has its result: a loader that committed a file
    and died before handing the result over leaves it in closed/, and the file is loaded
    again (its events found there already), so the run still counts it and its clients."""
    from aggregation.services import consolidation

    settings.CONSOLIDATION_WORKERS = 2
    client = ClientFactory()
    _spool_files(settings, client.pk, files=4, events=200, visitors=10)
    closed = spool_paths()["closed"]
    culprit = sorted(closed.glob("*.jsonl"))[1]
    died = tmp_path / "died"
    real_load = consolidation._file_load_kept

    def load_then_die_once(path):
        result = real_load(path)
        if path.name == culprit.name and not died.exists():
            died.touch()
            os._exit(9)  # committed, result never handed over
        return result

    monkeypatch.setattr(consolidation, "_file_load_kept", load_then_die_once)
    run = spool_consolidate()

    assert died.exists()
    assert (run.status, run.error, run.files) == ("done", "", 4)
    assert (run.loaded, run.duplicates) == (600, 200)
    assert run.client_ids == [client.pk]
    assert list(closed.iterdir()) == []
    assert Event.objects.filter(client=client).count() == 800
