import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.urls import reverse

from aggregation.imports import cell_safe, mapping_validate, row_records, visitor_id_for
from aggregation.models import Event, ImportJob, ImportMapping, Profile
from aggregation.records import RecordError
from aggregation.services import spool_consolidate
from aggregation.services.imports import error_report_path, import_job_create, import_job_run
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 1, tzinfo=UTC)
COLUMNS = {
    "customer_id": "Customer No",
    "email": "E-mail",
    "order_id": "Order",
    "order_date": "Date",
    "order_total": "Total",
    "currency": "Currency",
    "attributes": ["Tier", "City"],
}
HEADER = "Customer No,E-mail,Order,Date,Total,Currency,Tier,City\n"
ROWS = (
    "C1,Ann@Example.com,O-1,2025-03-01,120.50,usd,gold,Zürich\n"
    "C1,ann@example.com,O-2,2025-04-01,79.50,usd,gold,Zürich\n"
    "C2,bob@example.com,,,,,silver,Genève\n"
    "C3,not-an-email,O-3,2025-05-01,10,usd,,\n"
    "C4,dan@example.com,O-4,yesterday,10,usd,,\n"
    "C5,=HYPERLINK(1),O-5,2025-05-01,lots,usd,,\n"
)


@pytest.fixture
def mapping():
    client = ClientFactory()
    return ImportMapping.objects.create(client=client, name="Legacy shop", columns=COLUMNS)


def _import(mapping, data: bytes, name="customers.csv") -> ImportJob:
    job = import_job_create(mapping=mapping, file_name=name, source=io.BytesIO(data), enqueue=False)
    return import_job_run(job_id=job.pk)


def test_a_row_gives_a_customer_record_and_its_order():
    row = {"Customer No": "C1", "E-mail": "Ann@Example.com", "Order": "O-1", "Date": "2025-03-01",
           "Total": "120,5", "Currency": "usd", "Tier": "gold", "City": "Zürich"}  # fmt: skip

    purchase, record = row_records(row, mapping=COLUMNS, client_id=7, now=NOW)

    assert purchase["visitor_id"] == record["visitor_id"] == visitor_id_for(7, "C1")
    assert (purchase["type"], purchase["order_id"], purchase["value"], purchase["currency"]) == (
        "purchase", "O-1", "120.50", "USD",
    )  # fmt: skip
    assert purchase["occurred_at"] == record["occurred_at"] == "2025-03-01T00:00:00+00:00"
    assert record["properties"] == {
        "name": "customer_record", "Tier": "gold", "City": "Zürich", "customer_id": "C1",
    }  # fmt: skip
    assert record["email"] == purchase["email"] == "ann@example.com"
    again = row_records(row, mapping=COLUMNS, client_id=7, now=NOW)
    assert [r["event_id"] for r in again] == [purchase["event_id"], record["event_id"]]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"Customer No": "", "E-mail": ""}, "neither a customer id nor an email"),
        ({"Customer No": "C", "E-mail": "x"}, "email 'x' is not an address"),
        ({"Customer No": "C", "Order": "O", "Date": "soon", "Total": "1"},
         "order_date 'soon' is not a date"),
        ({"Customer No": "C", "Order": "O", "Date": "2025-01-01", "Total": "x"},
         "order_total 'x' is not a number"),
        ({"Customer No": "C\x00"}, "customer_id holds characters that cannot be stored"),
    ],
)  # fmt: skip
def test_a_bad_row_is_refused_with_its_reason(row, error):
    with pytest.raises(RecordError) as raised:
        row_records(row, mapping=COLUMNS, client_id=7, now=NOW)

    assert str(raised.value) == error


@pytest.mark.parametrize(
    ("columns", "error"),
    [
        ({"email": "E", "colour": "C"}, "unknown fields in the mapping: colour"),
        ({"Tier": "T"}, "unknown fields in the mapping: Tier"),
        ({"attributes": ["Tier"]}, "the mapping needs a customer_id or an email column"),
        ({"email": "E", "order_id": "O"},
         "an order_id column needs order_date and order_total columns"),
    ],
)  # fmt: skip
def test_mapping_is_checked(columns, error):
    with pytest.raises(ValueError) as raised:
        mapping_validate(columns)

    assert str(raised.value) == error


def test_report_cells_never_run_as_formulas():
    assert [cell_safe(v) for v in ["=1+1", "+1", "-1", "@SUM", "ok", "\tx"]] == [
        "'=1+1", "'+1", "'-1", "'@SUM", "ok", "'\tx",
    ]  # fmt: skip


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1"])
def test_csv_import_builds_profiles_and_reports_bad_rows(mapping, encoding):
    job = _import(mapping, (HEADER + ROWS).encode(encoding))
    run = spool_consolidate()

    assert (job.status, job.encoding, job.rows, job.rejected_rows) == (
        "done", "latin-1" if encoding == "latin-1" else "utf-8-sig", 6, 3,
    )  # fmt: skip
    assert job.records == 5  # C1: 2 orders and 2 customer records; C2: 1 customer record
    ann = Profile.objects.get(
        client=mapping.client, visitor_id=visitor_id_for(mapping.client_id, "C1")
    )
    assert (ann.purchases, ann.total_spent, ann.email) == (2, Decimal("200.00"), "ann@example.com")
    assert ann.attributes == {"Tier": "gold", "City": "Zürich", "customer_id": "C1"}
    assert run.loaded == 5
    with error_report_path(job).open(encoding="utf-8") as report:
        assert list(csv.reader(report)) == [
            ["line", "reason"],
            ["5", "email 'not-an-email' is not an address"],
            ["6", "order_date 'yesterday' is not a date"],
            ["7", "email '=hyperlink(1)' is not an address"],
        ]


def test_importing_the_same_file_again_changes_nothing(mapping):
    _import(mapping, (HEADER + ROWS).encode())
    spool_consolidate()
    before = list(Event.objects.order_by("event_id").values_list("event_id", flat=True))

    _import(mapping, (HEADER + ROWS).encode())
    run = spool_consolidate()

    assert (run.loaded, run.duplicates) == (0, 5)
    assert list(Event.objects.order_by("event_id").values_list("event_id", flat=True)) == before


def test_json_lines_import(mapping):
    mapping.format = ImportMapping.Format.JSONL
    mapping.save(update_fields=["format"])
    lines = [
        {"Customer No": "C9", "E-mail": "eve@example.com", "Order": "O-9", "Date": "2025-02-02",
         "Total": 42, "Tier": "gold"},
        "not an object",
    ]  # fmt: skip
    data = "\n".join(json.dumps(line) for line in lines) + "\n{broken\n"

    job = _import(mapping, data.encode(), name="customers.jsonl")

    assert (job.rows, job.records, job.rejected_rows) == (3, 2, 2)


def test_import_command_converts_and_loads(mapping, tmp_path):
    path = tmp_path / "legacy.csv"
    path.write_bytes((HEADER + ROWS).encode())
    out = io.StringIO()

    call_command(
        "import_customers", str(path), client=mapping.client_id, mapping="Legacy shop", stdout=out
    )

    assert "done: 6 rows (utf-8-sig), 5 records, 3 rejected" in out.getvalue()
    assert "consolidated: 5 new events, 0 known" in out.getvalue()


def test_memory_stays_flat_as_the_file_grows(mapping):
    def peak(rows: int) -> int:
        data = HEADER + "".join(
            f"C{n},c{n}@example.com,O{n},2025-01-01,10.00,usd,gold,Bern\n" for n in range(rows)
        )
        tracemalloc.start()
        _import(mapping, data.encode())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(3_000), peak(30_000)

    assert large < small * 1.5, (small, large)


def test_console_upload_shows_progress_and_serves_the_report(client, marketer, client_a, on_commit):
    mapping = ImportMapping.objects.create(client=client_a, name="Legacy", columns=COLUMNS)
    upload = io.BytesIO((HEADER + ROWS).encode())
    upload.name = "legacy.csv"

    with on_commit():
        response = client.post(
            reverse("admin:aggregation-import-upload"), {"mapping": mapping.pk, "file": upload}
        )
    job = ImportJob.objects.get(client=client_a)
    pending = client.get(reverse("admin:aggregation_importjob_change", args=[job.pk]))
    import_job_run(job_id=job.pk)
    done = client.get(reverse("admin:aggregation_importjob_change", args=[job.pk]))
    report = client.get(reverse("admin:aggregation-import-errors", args=[job.pk]))

    assert response.status_code == 302
    assert b'http-equiv="refresh"' in pending.content
    assert b'http-equiv="refresh"' not in done.content
    assert b"100%" in done.content
    assert b"".join(report.streaming_content).splitlines()[0] == b"line,reason"


def test_a_late_latin1_byte_decides_the_encoding_before_anything_is_spooled(mapping):
    rows = [f"C{n},c{n}@example.com,,,,,gold,Bern\n".encode() for n in range(3000)]
    rows[2900] = "C2900,c2900@example.com,,,,,gold,Zürich\n".encode("latin-1")
    job = _import(mapping, HEADER.encode() + b"".join(rows))
    spool_consolidate()

    assert (job.encoding, job.records) == ("latin-1", 3000)
    city = Profile.objects.get(visitor_id=visitor_id_for(mapping.client_id, "C2900")).attributes
    assert city["City"] == "Zürich"


def test_an_unmapped_column_that_changes_does_not_make_new_records(mapping):
    header = HEADER.rstrip("\n") + ",Exported\n"
    first = header + "C1,ann@example.com,,,,,gold,Bern,2025-01-01\n"
    second = header + "C1,ann@example.com,,,,,gold,Bern,2025-02-01\n"
    _import(mapping, first.encode())
    spool_consolidate()

    _import(mapping, second.encode())
    run = spool_consolidate()

    assert (run.loaded, run.duplicates) == (0, 1)


def test_an_import_runs_once_even_if_its_task_is_delivered_twice(mapping):
    job = import_job_create(
        mapping=mapping,
        file_name="c.csv",
        source=io.BytesIO((HEADER + ROWS).encode()),
        enqueue=False,
    )
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING)  # taken elsewhere

    again = import_job_run(job_id=job.pk)

    assert (again.status, again.rows) == ("running", 0)


def test_the_upload_is_deleted_once_converted_and_old_reports_are_pruned(mapping, settings):
    import os
    from datetime import timedelta
    from pathlib import Path

    from aggregation.services.imports import import_reports_prune

    job = _import(mapping, (HEADER + ROWS).encode())
    report = error_report_path(job)
    assert (Path(job.path).exists(), report.exists()) == (False, True)

    old = (datetime.now(UTC) - timedelta(days=settings.ARCHIVE_KEEP_DAYS + 1)).timestamp()
    os.utime(report, (old, old))

    assert import_reports_prune(now=datetime.now(UTC)) == 1
    assert not report.exists()
