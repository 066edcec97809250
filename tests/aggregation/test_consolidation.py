import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
import zstandard
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db.models import F
from django.urls import reverse

from aggregation import spool
from aggregation.models import ConsolidationRun, Event, Profile
from aggregation.records import delivery_record
from aggregation.services import consolidation as services
from aggregation.services import spool_consolidate
from aggregation.spool import spool_append, spool_paths
from aggregation.tasks import consolidate
from delivery.identity import visitor_id_issue
from delivery.models import Visitor
from tests.factories import ClientFactory, UserFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def _record(client_id, visitor_id, kind, minutes, **fields) -> dict:
    at = (START + timedelta(minutes=minutes)).isoformat()
    record = delivery_record(
        client_id=client_id,
        visitor_id=visitor_id,
        session_id="6b000000.0123456789ab",
        placement_key="",
        campaign_key="",
        content_id=None,
        table_version=None,
        url="https://shop.example/",
        referrer="",
        at=START,
    )
    return {**record, "type": kind, "occurred_at": at, "received_at": at, **fields}


@pytest.fixture
def shopper():
    client = ClientFactory()
    visitor_id = visitor_id_issue()
    records = [
        _record(client.pk, visitor_id, "page_view", 0),
        _record(client.pk, visitor_id, "product_view", 1, product_id="driver"),
        _record(client.pk, visitor_id, "cart_add", 2, product_id="driver", value="349.00"),
        _record(
            client.pk, visitor_id, "purchase", 3, order_id="A1", value="349.00", email="a@b.example"
        ),
    ]
    return client, visitor_id, records


def _profile(client, visitor_id) -> dict:
    return (
        Profile.objects.filter(client=client, visitor_id=visitor_id)
        .values(
            "visits",
            "page_views",
            "product_views",
            "cart_adds",
            "purchases",
            "total_spent",
            "email",
        )
        .get()
    )


EXPECTED_PROFILE = {
    "visits": 1,
    "page_views": 1,
    "product_views": 1,
    "cart_adds": 1,
    "purchases": 1,
    "total_spent": pytest.approx(349),
    "email": "a@b.example",
}


def test_consolidation_loads_archives_and_builds_profiles(shopper):
    client, visitor_id, records = shopper
    spool_append(records)

    run = spool_consolidate()

    assert (run.status, run.files, run.lines, run.loaded, run.duplicates, run.bad_lines) == (
        "done", 1, 4, 4, 0, 0,
    )  # fmt: skip
    assert Event.objects.filter(client=client).count() == 4
    assert _profile(client, visitor_id) == EXPECTED_PROFILE
    visitor = Visitor.objects.get(client=client, visitor_id=visitor_id)
    assert (visitor.first_seen_at, visitor.last_seen_at) == (START, START + timedelta(minutes=3))
    paths = spool_paths()
    assert list(paths["closed"].iterdir()) == []
    [archive] = paths["archive"].glob("*.jsonl.zst")
    archived = [json.loads(line) for line in _unzstd(archive).splitlines()]
    assert [record["event_id"] for record in archived] == [r["event_id"] for r in records]


def test_running_again_on_the_same_file_changes_nothing(shopper):
    client, visitor_id, records = shopper
    spool_append(records)
    spool_consolidate()
    paths = spool_paths()
    [archive] = paths["archive"].glob("*.jsonl.zst")
    (paths["closed"] / "again.jsonl").write_bytes(_unzstd(archive))

    run = spool_consolidate()

    assert (run.loaded, run.duplicates) == (0, 4)
    assert Event.objects.filter(client=client).count() == 4
    assert _profile(client, visitor_id) == EXPECTED_PROFILE


def test_same_event_twice_in_one_file_loads_once(shopper):
    client, _visitor_id, records = shopper
    spool_append(records + records[:2])

    run = spool_consolidate()

    assert (run.lines, run.loaded, run.duplicates) == (6, 4, 2)
    assert Event.objects.filter(client=client).count() == 4


def test_bad_lines_go_to_dead_letter_with_reason(shopper):
    client, _visitor_id, records = shopper
    spool_append(records[:2])
    closed = spool_paths()["closed"]
    spool_consolidate()  # loads the good file
    (closed / "mixed.jsonl").write_bytes(
        b"{not json\n"
        + json.dumps({**records[2], "type": "teleport"}).encode()
        + b"\n"
        + json.dumps({**records[3], "client": 999999}).encode()
        + b"\n"
        + json.dumps(records[2]).encode()
        + b"\n"
    )

    run = spool_consolidate()

    assert (run.lines, run.loaded, run.bad_lines) == (4, 1, 3)
    dead = (spool_paths()["dead"] / "mixed.jsonl.dead").read_text().splitlines()
    assert [line.split("\t")[0] for line in dead] == [
        "line 1: not JSON",
        "line 2: unknown type 'teleport'",
        "line 3: unknown client 999999",
    ]
    assert json.loads(dead[2].split("\t")[1])["client"] == 999999
    assert Event.objects.filter(client=client).count() == 3


def test_failure_before_profiles_keeps_the_file_and_next_run_completes_it(shopper, monkeypatch):
    client, visitor_id, records = shopper
    spool_append(records)

    def crash(**kwargs):
        raise RuntimeError("worker killed")

    with monkeypatch.context() as patch:
        patch.setattr(services, "profiles_apply", crash)
        failed = spool_consolidate()

    [name] = [path.name for path in spool_paths()["closed"].glob("*.jsonl")]
    assert (failed.status, failed.error) == ("failed", f"{name}: RuntimeError: worker killed")
    # One transaction per file: its events went with the profiles that failed.
    assert (Event.objects.count(), Profile.objects.count()) == (0, 0)
    again = spool_consolidate()
    assert (again.status, again.loaded, again.duplicates) == ("done", 4, 0)
    assert again.client_ids == [client.pk]  # so its tables are rebuilt all the same
    assert _profile(client, visitor_id) == EXPECTED_PROFILE
    assert list(spool_paths()["closed"].iterdir()) == []


def test_a_file_failing_again_and_again_is_quarantined_and_others_still_load(shopper, monkeypatch):
    _, _, records = shopper
    spool_append(records[:1])
    spool.spool_seal_open()
    [poison] = spool_paths()["closed"].glob("*.jsonl")
    real_load = services.events_load

    poison_id = shopper[2][0]["event_id"]

    def load_failing_for_poison(*, records, copy_text=None):
        # On PostgreSQL the events come as COPY text, on SQLite as records.
        if poison_id in (copy_text or "") or any(r.event_id == poison_id for r in records):
            raise RuntimeError("cannot load")
        return real_load(records=records, copy_text=copy_text)

    monkeypatch.setattr(services, "events_load", load_failing_for_poison)
    runs = [spool_consolidate() for _ in range(services.MAX_FILE_ATTEMPTS)]
    spool_append(records[1:])
    healthy = spool_consolidate()

    assert [run.status for run in runs] == ["failed"] * services.MAX_FILE_ATTEMPTS
    assert list(spool_paths()["quarantine"].iterdir()) == [
        spool_paths()["quarantine"] / poison.name
    ]
    assert (healthy.status, healthy.loaded) == ("done", 3)


def test_a_requeued_file_loads_once_its_cause_is_gone(client, shopper, superuser, monkeypatch):
    owner, _, records = shopper
    spool_append(records)
    spool.spool_seal_open()
    [poison] = spool_paths()["closed"].glob("*.jsonl")
    with monkeypatch.context() as patch:
        patch.setattr(services, "events_load", _failing_load)
        for _ in range(services.MAX_FILE_ATTEMPTS):
            spool_consolidate()
    url = reverse("admin:aggregation-quarantine-requeue", args=[poison.name])
    client.force_login(UserFactory())  # staff, not a superuser
    refused = client.post(url)
    client.force_login(superuser)
    missing = client.post(reverse("admin:aggregation-quarantine-requeue", args=["nope.jsonl"]))

    requeued = client.post(url)
    run = spool_consolidate()

    assert (refused.status_code, missing.status_code, requeued.status_code) == (403, 404, 302)
    assert list(spool_paths()["quarantine"].iterdir()) == []
    assert (run.status, run.loaded) == ("done", len(records))
    assert Event.objects.filter(client=owner).count() == len(records)


def _failing_load(**kwargs):
    raise RuntimeError("cannot load")


def test_a_second_consolidation_while_one_runs_is_skipped(shopper):
    _, _, records = shopper
    spool_append(records)

    with services.consolidation_lock() as is_acquired:
        skipped = spool_consolidate()

    assert is_acquired is True
    assert (skipped.status, skipped.loaded, skipped.error) == (
        "skipped",
        0,
        "another consolidation was running",
    )
    assert spool_consolidate().loaded == 4


def test_consolidate_task_queues_table_rebuild_only_when_new_data(shopper, on_commit):
    _, _, records = shopper
    queue = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    spool_append(records)

    with on_commit():
        result = consolidate()
    with on_commit():
        nothing_new = consolidate()

    assert (result["loaded"], nothing_new["loaded"]) == (4, 0)
    messages = [json.loads(raw) for raw in queue.lrange("celery", 0, -1)]
    assert [
        (message["headers"]["task"], message["headers"]["argsrepr"]) for message in messages
    ] == [("segmentation.build_tables", f"({shopper[0].pk},)")]
    assert ConsolidationRun.objects.count() == 2


def test_abandoned_cart_counted_once_session_went_idle(shopper):
    client, _visitor_id, _records = shopper
    other = visitor_id_issue()
    recent = datetime.now(UTC) - timedelta(minutes=40)
    spool_append(
        [
            {
                **_record(client.pk, other, "cart_add", 0, value="10.00"),
                "occurred_at": recent.isoformat(),
                "received_at": recent.isoformat(),
                "event_id": str(uuid.uuid4()),
            }
        ]
    )

    spool_consolidate()

    profile = Profile.objects.get(client=client, visitor_id=other)
    assert (profile.cart_adds, profile.cart_abandonments, profile.purchases) == (1, 1, 0)


def test_archives_older_than_the_keep_time_and_leftovers_are_pruned(settings):
    settings.ARCHIVE_KEEP_DAYS = 30
    archive = spool_paths()["archive"]
    archive.mkdir(parents=True)
    now = datetime.now(UTC)
    for name, age_days in [
        ("old.jsonl.zst", 31),
        ("recent.jsonl.zst", 29),
        ("older-gzip.jsonl.gz", 40),
        (".x.tmp", 0),
    ]:
        path = archive / name
        path.write_bytes(b"")
        stamp = (now - timedelta(days=age_days)).timestamp()
        os.utime(path, (stamp, stamp))

    pruned = services.archives_prune(now=now)

    assert pruned == 2
    assert sorted(path.name for path in archive.iterdir()) == ["recent.jsonl.zst"]


def test_dead_letters_page_lists_and_serves_files_to_superusers_only(client, shopper, superuser):
    _, _, records = shopper
    (spool_paths()["closed"]).mkdir(parents=True, exist_ok=True)
    (spool_paths()["closed"] / "bad.jsonl").write_bytes(
        b"{oops\n" + json.dumps(records[0]).encode() + b"\n"
    )
    spool_consolidate(seal_open=False)
    page = client.get(reverse("admin:aggregation-dead-letters"))
    download = client.get(
        reverse("admin:aggregation-dead-letter-download", args=["dead", "bad.jsonl.dead"])
    )
    escape = client.get(reverse("admin:aggregation-dead-letter-download", args=["dead", "..bad"]))

    assert [(f["kind"], f["name"], f["lines"]) for f in page.context["files"]] == [
        ("dead", "bad.jsonl.dead", 1)
    ]
    assert b"".join(download.streaming_content) == b"line 1: not JSON\t{oops\n"
    assert escape.status_code == 404
    client.force_login(UserFactory())  # staff, no client, no superuser
    assert client.get(reverse("admin:aggregation-dead-letters")).status_code == 403


def test_a_file_is_loaded_in_slices_and_a_crash_between_them_leaves_nothing(shopper, monkeypatch):
    client, _, records = shopper
    monkeypatch.setattr(services, "SLICE_LINES", 3)
    spool_append(records + [{**record, "event_id": str(uuid.uuid4())} for record in records])
    real_load = services.events_load
    calls = []

    def crash_on_second_slice(*, records, copy_text=None):
        calls.append(len(records) or (copy_text or "").count("\n"))  # SQLite or PostgreSQL
        if len(calls) == 2:
            raise RuntimeError("killed between slices")
        return real_load(records=records, copy_text=copy_text)

    with monkeypatch.context() as patch:
        patch.setattr(services, "events_load", crash_on_second_slice)
        failed = spool_consolidate()
    loaded_before = Event.objects.filter(client=client).count()
    again = spool_consolidate()

    # One transaction for the file: the first slice went back with the second.
    assert (failed.status, loaded_before, calls) == ("failed", 0, [3, 3])
    assert (again.status, again.lines, again.loaded, again.duplicates) == ("done", 8, 8, 0)
    assert Event.objects.filter(client=client).count() == 8


def test_settling_recomputes_only_sessions_that_ended_since_the_last_run():
    from aggregation.services import profiles_settle

    now = datetime.now(UTC)
    client = ClientFactory()
    ended_now, ended_before, counted = visitor_id_issue(), visitor_id_issue(), visitor_id_issue()
    for visitor_id, minutes_ago in [(ended_now, 40), (ended_before, 180), (counted, 40)]:
        at = (now - timedelta(minutes=minutes_ago)).isoformat()
        spool_append(
            [{**_record(client.pk, visitor_id, "cart_add", 0, value="5.00"),
              "occurred_at": at, "received_at": at, "event_id": str(uuid.uuid4())}]
        )  # fmt: skip
    spool_consolidate()
    # As if computed while the sessions were open; `counted` was computed after its ended.
    Profile.objects.exclude(visitor_id=counted).update(
        cart_abandonments=0, updated_at=F("last_seen_at")
    )

    settled = profiles_settle(now=now, since=now - timedelta(minutes=20))

    assert settled == 1
    abandonments = dict(Profile.objects.values_list("visitor_id", "cart_abandonments"))
    assert abandonments == {ended_now: 1, ended_before: 0, counted: 1}


def test_a_database_outage_never_sends_a_file_to_quarantine(shopper, monkeypatch):
    from django.db import OperationalError

    _, _, records = shopper
    spool_append(records)

    def database_away(*, records, copy_text=None):
        raise OperationalError("server closed the connection unexpectedly")

    with monkeypatch.context() as patch:
        patch.setattr(services, "events_load", database_away)
        runs = [spool_consolidate() for _ in range(services.MAX_FILE_ATTEMPTS + 1)]

    assert {run.status for run in runs} == {"failed"}
    assert list(spool_paths()["quarantine"].glob("*")) == []
    assert spool_consolidate().loaded == 4


def _unzstd(path) -> bytes:
    with path.open("rb") as file:
        return zstandard.ZstdDecompressor().stream_reader(file).read()


def _line(record: dict) -> bytes:
    return json.dumps(record).encode() + b"\n"


def test_lines_the_fast_reading_lets_through_are_refused_or_loaded_line_by_line(shopper):
    """Whatever a line holds, it is loaded or refused with its reason: never the whole file."""
    client, visitor_id, records = shopper
    good = records[0]

    def variant(**fields):
        return {**good, "event_id": str(uuid.uuid4()), **fields}

    big_number = variant(properties={"n": 10**20})  # beyond orjson's 64 bits
    basic_format = variant(received_at="2026-01-05T100000.5+00:00")  # ISO 8601's basic format
    lines = [
        _line(variant(occurred_at="2026-01-05T24:00:00+00:00")),
        _line(variant(occurred_at="2026-01-05T23:59:60+00:00")),
        _line(basic_format),
        _line(variant(occurred_at="0001-01-01T01:00:00+05:00")),
        _line(variant(type="email_open", occurred_at="2026-01-05T24:00:00+00:00")),
        b'{"event_id": "\xff\xfe"}\n',
        _line(big_number),
        _line(variant(occurred_at="2026-11-01T10:00:00.000000+00:00")),
        _line(good),
    ]
    spool_paths()["closed"].mkdir(parents=True, exist_ok=True)
    (spool_paths()["closed"] / "odd.jsonl").write_bytes(b"".join(lines))

    run = spool_consolidate(seal_open=False)

    assert (run.status, run.error, run.lines, run.loaded, run.bad_lines) == ("done", "", 9, 4, 5)
    dead = (spool_paths()["dead"] / "odd.jsonl.dead").read_text(errors="replace").splitlines()
    assert [line.split("\t")[0] for line in dead] == [
        "line 1: bad field: hour must be in 0..23",
        "line 2: bad field: second must be in 0..59",
        "line 4: occurred_at is out of range in UTC",
        "line 5: bad field: hour must be in 0..23",
        "line 6: not JSON",
    ]
    assert Event.objects.get(event_id=big_number["event_id"]).properties == {"n": 1e20}
    assert Event.objects.get(event_id=basic_format["event_id"]).received_at == datetime(
        2026, 1, 5, 10, 0, 0, 500000, tzinfo=UTC
    )
    # The loaded events' profile is the one a rebuild makes.
    loaded = _profile(client, visitor_id)
    call_command("rebuild_profiles", client=client.pk)
    assert _profile(client, visitor_id) == loaded
