"""Ingest benchmark (A1-A3, A5): events through collect, the spool and consolidation.

    make bench-ingest                         # 1,000,000 events, PostgreSQL + Redis started for it
    .venv/bin/python bench/ingest.py --events 100000   # with DATABASE_URL pointing at PostgreSQL

Stages, each timed on its own:
1. collect: a gunicorn server (2 sync workers, as in production) on loopback takes batches of
   100 events from 4 keep-alive client threads in this process;
2. consolidation: one `spool_consolidate()` in this process (files loaded two at a time, each
   in a loader process of its own, by COPY in one transaction with its visitors' profiles);
3. returning visitors: a fifth as many events again, from visitors of the first round, through
   collect and a second consolidation (their profiles known: each merged with its kept tally);
4. the profiles alone: `profiles_rebuild_all()` over all the events, which must give exactly
   the profiles consolidation made.
It ends with one JSON line: collect_events_per_s, consolidate_events_per_s,
returning_consolidate_events_per_s, profiles_per_s, profiles_equal_rebuild, peak_rss_mb (the
largest resident size of one process: this one, which runs the collect clients and the
consolidation, or one it started and waited for: the loaders, gunicorn and its workers).
Runs in a database of its own (coremetrics_bench), dropped and created anew.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
THREADS = 4


def _peak_mb(who: int) -> int:
    """The largest resident size of this process (RUSAGE_SELF) or of any process it started
    and waited for (RUSAGE_CHILDREN), in MB."""
    return round(resource.getrusage(who).ru_maxrss / 1024)


def _event_id(now_ms: int, rng: random.Random) -> str:
    """An event id as the tag makes one: a version 7 UUID (the time in its first 48 bits)."""
    bits = (
        (now_ms << 80) | (7 << 76) | (rng.getrandbits(12) << 64) | (2 << 62) | rng.getrandbits(62)
    )
    return str(uuid.UUID(int=bits))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--visitors", type=int, default=100_000)
    parser.add_argument(
        "--batch",
        type=int,
        choices=range(1, 101),
        metavar="1..100",
        default=100,
        help="events per collect batch, each batch one visitor's: 100 gives about 10,000 "
        "visitors of 100 events per 1,000,000; 10 about 100,000 visitors of 10",
    )
    args = parser.parse_args()

    database_url = _bench_database(os.environ["DATABASE_URL"])
    data_dir = Path(tempfile.mkdtemp(prefix="coremetrics-bench-"))
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "COREMETRICS_DATA_DIR": str(data_dir),
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret-key"),
            "HTTPS": "0",
            "SPOOL_ROTATE_SECONDS": "3600",
            "COLLECT_RATE_PER_SECOND": "10000000",
            "DJANGO_SETTINGS_MODULE": "coremetrics.settings",
        }
    )
    sys.path.insert(0, str(ROOT))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True, env=os.environ
    )
    import django

    django.setup()
    from aggregation.models import ConsolidationRun, Event
    from aggregation.services import profiles_rebuild_all, spool_consolidate
    from delivery.identity import visitor_id_issue
    from delivery.services import manifest_publish
    from tests.factories import ClientFactory

    client = ClientFactory(name="Bench", slug="bench")
    manifest_publish(client_id=client.pk)
    visitors = [visitor_id_issue() for _ in range(args.visitors)]

    def collect(total: int, chosen_from: list[str], seed: int) -> tuple[int, float, set[str]]:
        port = _free_port()
        server = subprocess.Popen(
            [str(ROOT / ".venv/bin/gunicorn"), "coremetrics.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--log-level", "warning"],
            cwd=ROOT,
            env=os.environ,
        )  # fmt: skip
        try:
            _wait_for(port)
            started = time.perf_counter()
            sent, used = _collect(port, client.public_key, chosen_from, total, seed, args.batch)
            return sent, time.perf_counter() - started, used
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)

    def consolidate() -> tuple[ConsolidationRun, float]:
        started = time.perf_counter()
        run = spool_consolidate()
        seconds = time.perf_counter() - started
        assert run.status == "done", run.error
        return run, seconds

    sent, collect_seconds, used = collect(args.events, visitors, seed=0)
    run, consolidate_seconds = consolidate()
    # The same visitors again: their profiles are known, and each file's events are merged
    # into them (their kept tallies) rather than computed from their whole history.
    returning_events = args.events // 5
    sent_again, _, _ = collect(returning_events, sorted(used), seed=100)
    again, returning_seconds = consolidate()
    loaded = Event.objects.filter(client=client).count()

    consolidated = _profiles_snapshot(client.pk)
    started = time.perf_counter()
    profiles = profiles_rebuild_all(client_id=client.pk)
    profile_seconds = time.perf_counter() - started
    rebuilt = _profiles_snapshot(client.pk)

    figures = {
        "events": args.events,
        "batch": args.batch,
        "events_loaded": loaded,
        "collect_events_per_s": round(sent / collect_seconds),
        "consolidate_events_per_s": round(run.loaded / consolidate_seconds),
        "returning_consolidate_events_per_s": round(again.loaded / returning_seconds),
        "profiles_per_s": round(profiles / profile_seconds),
        "profiles_equal_rebuild": consolidated == rebuilt,
        "peak_rss_mb": max(_peak_mb(resource.RUSAGE_SELF), _peak_mb(resource.RUSAGE_CHILDREN)),
    }
    print(
        f"collect: {sent} events in {collect_seconds:.1f} s; consolidation: {run.loaded} events, "
        f"{run.profiles_updated} profiles in {consolidate_seconds:.1f} s; returning visitors: "
        f"{again.loaded} events, {again.profiles_updated} profiles in {returning_seconds:.1f} s; "
        f"profiles alone: {profiles} in {profile_seconds:.1f} s; peak resident memory: this "
        f"process {_peak_mb(resource.RUSAGE_SELF)} MB (it holds both profile snapshots to "
        f"compare them), the largest of the others {_peak_mb(resource.RUSAGE_CHILDREN)} MB",
        file=sys.stderr,
    )
    print(json.dumps(figures))
    shutil.rmtree(data_dir, ignore_errors=True)
    if loaded != sent + sent_again:
        sys.exit(f"lost or doubled events: sent {sent + sent_again}, loaded {loaded}")
    if consolidated != rebuilt:
        sys.exit("the consolidated profiles differ from a rebuild from the events")


def _profiles_snapshot(client_id: int) -> dict:
    from aggregation.models import Profile
    from aggregation.services.profiles import PROFILE_FIELDS

    fields = [name for name in PROFILE_FIELDS if name != "updated_at"]
    return {
        row[0]: row[1:]
        for row in Profile.objects.filter(client_id=client_id).values_list("visitor_id", *fields)
    }


def _collect(
    port: int, key: str, visitors: list[str], total: int, seed: int, batch: int
) -> tuple[int, set[str]]:
    """Send `total` events in batches from THREADS keep-alive connections, each batch from a
    visitor chosen among `visitors`; returns how many were accepted, and the visitors used."""
    per_thread = total // THREADS
    accepted = [0] * THREADS
    used: set[str] = set()
    failures: list[str] = []
    kinds = ["page_view", "product_view", "cart_add", "cart_remove", "purchase"]

    def run(index: int) -> None:
        rng = random.Random(seed + index)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        remaining = per_thread + (total % THREADS if index == 0 else 0)
        while remaining:
            size = min(batch, remaining)
            now = int(time.time() * 1000)
            events = []
            for _ in range(size):
                kind = rng.choice(kinds)
                event = {
                    "id": _event_id(now, rng),
                    "type": kind,
                    "at": now,
                    "url": "https://b.example/",
                }
                if kind == "purchase":
                    event |= {"order_id": uuid.uuid4().hex[:12], "value": 42.5}
                else:
                    event["product_id"] = f"p{rng.randrange(500)}"
                events.append(event)
            visitor = rng.choice(visitors)
            used.add(visitor)
            session = f"{now // 1000:x}.{visitor[:12].encode().hex()[:12]}"
            body = json.dumps(
                {"visitor": visitor, "session": session, "sent_at": now, "events": events}
            )
            headers = {"Content-Type": "text/plain"}
            connection.request("POST", f"/c/v1/collect?k={key}", body, headers)
            response = connection.getresponse()
            payload = json.loads(response.read())
            if response.status != 202:
                failures.append(f"{response.status} {payload}")
                return
            accepted[index] += payload["accepted"]
            remaining -= size

    threads = [threading.Thread(target=run, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit(f"collect failed: {failures[:3]}")
    return sum(accepted), used


def _bench_database(url: str) -> str:
    import psycopg2

    parts = urlsplit(url)
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("DROP DATABASE IF EXISTS coremetrics_bench")
        cursor.execute("CREATE DATABASE coremetrics_bench")
    admin.close()
    return urlunsplit(parts._replace(path="/coremetrics_bench"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("the server did not start")


if __name__ == "__main__":
    main()
