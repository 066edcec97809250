"""Lookup-table build benchmark (S4): profiles, 5 segments, 3 campaigns, built and published.

    make bench-tables                                    # 1,000,000 profiles, services started
    .venv/bin/python bench/tables.py --profiles 100000   # with DATABASE_URL and REDIS_URL set

The data: one client whose profiles are loaded with COPY (varied values, fixed seed); 5 segments
over profile fields only (the benchmark has no events); 3 campaigns, each on a placement of its
own with a default content and the 5 segments attached (priorities 1 to 5, in a different order
per campaign). Every profile is in at least one segment (returning or first-time), so every
campaign's table names every visitor: the largest table this many profiles can give.

Stages, each timed on its own and summed over the 3 campaigns:
1. segment_eval_s: for every attachment, the segment's query as the build runs it
   (`profiles_matching(...).values_list("visitor_id")`, fetched 5,000 rows at a time), the ids
   counted and dropped; a pass of its own before the build;
2. build_s: `_table_compute` inside `tables_build`, the whole table in memory (it runs the same
   queries again: the build's own per-segment times, TableVersion.segment_seconds, are printed
   beside);
3. publish_s: the rest of `tables_build`: the version row, `table_store` (the table serialised
   and written to Redis), `_describe` (checksum, counts), `_publish` (the manifest), pruning and
   the final manifests.
build_s + publish_s is the whole rebuild of tables built for the first time (no diff).
4. changed_rebuild_s: then a tenth of the non-buyers become buyers and `tables_build` runs
   again: the usual case, each changed table compared with the serving one (the diff) before
   it publishes; a campaign whose higher priorities hide the change adds no version.

It ends with one JSON line: profiles, segment_eval_s, build_s, publish_s, changed_rebuild_s,
peak_rss_mb (the
largest resident size of this process, which runs the build). Runs in a database of its own
(coremetrics_bench_tables, dropped and created anew) and in Redis database 5 (flushed), so the
test suite's database 0 is left alone.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "coremetrics_bench_tables"
REDIS_DB = 5
# Rows per COPY: about 4 MB of CSV text (StringIO may hold it at 4 bytes a character).
COPY_ROWS = 20_000
SEGMENTS = {
    "Big spenders": {"field": "total_spent", "op": "gte", "value": 100},
    "Buyers": {"field": "purchases", "op": "gte", "value": 1},
    "Returning from search or campaign": {
        "all": [
            {"field": "visits", "op": "gt", "value": 1},
            {"field": "source", "op": "in", "value": ["search", "campaign"]},
        ]
    },
    "Returning": {"field": "visits", "op": "gt", "value": 1},
    "First-time": {"field": "first_time", "op": "is", "value": True},
}
CAMPAIGNS = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="coremetrics-bench-"))
    os.environ.update(
        {
            "DATABASE_URL": _bench_database(os.environ["DATABASE_URL"]),
            "REDIS_URL": _bench_redis(os.environ["REDIS_URL"]),
            "COREMETRICS_DATA_DIR": str(data_dir),
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret-key"),
            "HTTPS": "0",
            "DJANGO_SETTINGS_MODULE": "coremetrics.settings",
        }
    )
    sys.path.insert(0, str(ROOT))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True, env=os.environ
    )
    import django

    django.setup()
    from django.db import connection

    from aggregation.selectors import profiles_matching
    from campaigns.selectors import attachments_for_campaign
    from segmentation import services
    from tests.factories import (
        AttachmentFactory,
        CampaignFactory,
        ClientFactory,
        SegmentFactory,
    )

    client = ClientFactory(name="Bench", slug="bench")
    segments = [
        SegmentFactory(client=client, name=name, rule=rule) for name, rule in SEGMENTS.items()
    ]
    for number in range(CAMPAIGNS):
        campaign = CampaignFactory(client=client, key=f"bench-{number}", name=f"Bench {number}")
        for priority in range(1, len(segments) + 1):
            AttachmentFactory(
                campaign=campaign,
                segment=segments[(priority - 1 + number) % len(segments)],
                priority=priority,
            )
    started = time.perf_counter()
    _profiles_load(client.pk, args.profiles)
    load_seconds = time.perf_counter() - started
    setup_rss_mb = _peak_rss_mb()

    started = time.perf_counter()
    matched = 0
    for campaign in client.campaigns.order_by("pk"):
        for attachment in attachments_for_campaign(campaign_id=campaign.pk):
            condition = services.rule_condition(rule=attachment.segment.rule, client_id=client.pk)
            visitor_ids = profiles_matching(client_id=client.pk, condition=condition)
            for _ in visitor_ids.values_list("visitor_id", flat=True).iterator(chunk_size=5000):
                matched += 1
    segment_eval_seconds = time.perf_counter() - started

    compute = _timed(services, "_table_compute")
    store = _timed(services, "table_store")
    started = time.perf_counter()
    versions = services.tables_build(client_id=client.pk)
    rebuild_seconds = time.perf_counter() - started
    build_seconds, store_seconds = compute.seconds, store.seconds

    failed = [version.error for version in versions if version.status != "published"]
    if failed:
        sys.exit(f"table builds failed: {failed}")
    sizes = [version.visitor_count for version in versions]
    in_build_seconds = sum(sum(version.segment_seconds.values()) for version in versions)

    # The usual case: a table serves and a tenth of the profiles changed since (buyers now),
    # so each new version is compared with the serving one (the diff) before it publishes.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE aggregation_profile SET purchases = purchases + 1, total_spent = 50 "
            "WHERE id %% %s = 0 AND purchases = 0",
            [10],
        )
    started = time.perf_counter()
    changed = services.tables_build(client_id=client.pk)
    changed_seconds = time.perf_counter() - started
    moved = [sum(move["visitors"] for move in version.diff) for version in changed]
    # A campaign whose higher priorities hide the change comes out the same: no new version.
    if not any(moved) or any(version.status != "published" for version in changed):
        sys.exit(f"the changed rebuild moved nobody: {[v.status for v in changed]}")
    figures = {
        "profiles": args.profiles,
        "segment_eval_s": round(segment_eval_seconds, 1),
        "build_s": round(build_seconds, 1),
        "publish_s": round(rebuild_seconds - build_seconds, 1),
        "changed_rebuild_s": round(changed_seconds, 1),
        "peak_rss_mb": _peak_rss_mb(),
    }
    print(
        f"load: {args.profiles} profiles in {load_seconds:.1f} s (peak RSS {setup_rss_mb} MB); "
        f"segment evaluation: {matched} ids from 15 queries in {segment_eval_seconds:.1f} s; "
        f"rebuild: {rebuild_seconds:.1f} s, of which _table_compute {build_seconds:.1f} s "
        f"(its segments {in_build_seconds:.1f} s), table_store {store_seconds:.1f} s; "
        f"visitors per table {sizes}; changed rebuild (diff included): {changed_seconds:.1f} s, "
        f"visitors moved per table {moved}",
        file=sys.stderr,
    )
    print(json.dumps(figures))
    shutil.rmtree(data_dir, ignore_errors=True)
    if any(size != args.profiles for size in sizes):
        sys.exit(f"a table misses visitors: {sizes} of {args.profiles}")


class _Timer:
    def __init__(self) -> None:
        self.seconds = 0.0


def _timed(module, name: str) -> _Timer:
    """Wrap module.name so that the time spent in it adds up in the returned timer."""
    timer = _Timer()
    original: Callable = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            timer.seconds += time.perf_counter() - started

    setattr(module, name, wrapper)
    return timer


def _profiles_load(client_id: int, total: int) -> None:
    """COPY `total` profiles with varied values (seeded) into the client, then analyse them."""
    from django.db import connection

    from aggregation.services.profiles import PROFILE_FIELDS

    columns = ["client_id", "visitor_id", *PROFILE_FIELDS]
    rng = random.Random(20261122)
    moment = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    sources = ["direct", "referral", "search", "campaign", "email"]
    # Unquoted empty fields are NULL in CSV; an unknown email is "" here.
    copy = (
        f"COPY aggregation_profile ({', '.join(columns)}) FROM STDIN "
        "(FORMAT csv, FORCE_NOT_NULL (email))"
    )
    with connection.cursor() as cursor:
        for first in range(0, total, COPY_ROWS):
            buffer = io.StringIO()
            for number in range(first, min(first + COPY_ROWS, total)):
                buffer.write(_profile_line(rng, client_id, number, moment, sources))
            buffer.seek(0)
            cursor.copy_expert(copy, buffer)
        # Statistics, visibility map and hint bits now, so that no timed stage pays for them.
        cursor.execute("VACUUM ANALYZE aggregation_profile")


def _profile_line(
    rng: random.Random, client_id: int, number: int, moment: datetime, sources: list[str]
) -> str:
    # Ids of the issued shape (20 characters, a dot, 10 hex digits); their MAC is not checked here.
    visitor_id = f"{base64.urlsafe_b64encode(rng.randbytes(15)).decode()}.{rng.randbytes(5).hex()}"
    visits = 1 if rng.random() < 0.45 else 2 + int(rng.expovariate(0.3))
    page_views = visits * rng.randint(1, 8)
    product_views = rng.randint(0, page_views)
    cart_adds = 0 if rng.random() < 0.6 else rng.randint(1, 6)
    purchases = rng.randint(1, 4) if cart_adds and rng.random() < 0.5 else 0
    total_spent = round(purchases * rng.uniform(15, 120), 2)
    abandonments = rng.randint(0, min(visits, 3)) if cart_adds and not purchases else 0
    first_seen_at = moment - timedelta(days=rng.randint(0, 365))
    last_seen_at = (
        first_seen_at + timedelta(hours=rng.randint(0, 24 * 30)) if visits > 1 else first_seen_at
    )
    values = [
        client_id,
        visitor_id,
        visits,
        page_views,
        product_views,
        rng.randint(0, product_views),
        "{}",
        cart_adds,
        rng.randint(0, cart_adds),
        abandonments,
        purchases,
        f"{total_spent:.2f}",
        f"{total_spent / purchases if purchases else 0:.2f}",
        rng.choices(sources, weights=[40, 20, 25, 10, 5])[0],
        f"visitor{number}@shop.example" if rng.random() < 0.3 else "",
        "{}",
        first_seen_at.isoformat(),
        last_seen_at.isoformat(),
        moment.isoformat(),
    ]
    return ",".join(map(str, values)) + "\n"


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _bench_database(url: str) -> str:
    import psycopg2

    parts = urlsplit(url)
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()
    return urlunsplit(parts._replace(path=f"/{DATABASE}"))


def _bench_redis(url: str) -> str:
    import redis

    bench_url = urlunsplit(urlsplit(url)._replace(path=f"/{REDIS_DB}"))
    # Table keys are named by campaign id, which the new database starts again at 1.
    redis.Redis.from_url(bench_url).flushdb()
    return bench_url


if __name__ == "__main__":
    main()
