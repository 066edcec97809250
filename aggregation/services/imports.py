"""Imports of legacy customer records (A4): upload, conversion into the spool, error report."""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from aggregation import spool
from aggregation.imports import cell_safe, mapping_validate, row_records
from aggregation.models import ImportJob, ImportMapping
from aggregation.records import RecordError

logger = logging.getLogger(__name__)

# Rows converted between two progress updates and spool appends: about 5,000 records in
# memory (~10 MB), whatever the size of the file.
BATCH_ROWS = 2_500


def imports_dir() -> Path:
    return Path(settings.DATA_DIR) / "imports"


@transaction.atomic
def import_job_create(
    *, mapping: ImportMapping, file_name: str, source: IO[bytes], enqueue: bool = True
) -> ImportJob:
    """Keep the uploaded file and queue its conversion (after commit) unless told not to."""
    mapping_validate(mapping.columns)
    directory = imports_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.{mapping.format}"
    with path.open("wb") as target:
        shutil.copyfileobj(source, target)
    job = ImportJob.objects.create(
        client_id=mapping.client_id,
        mapping=mapping,
        file_name=file_name[:255],
        path=str(path),
        bytes_total=path.stat().st_size,
    )
    if enqueue:
        from aggregation.tasks import import_run

        transaction.on_commit(lambda: import_run.delay(job.pk))
    return job


def import_job_run(*, job_id: int) -> ImportJob:
    """Convert the file into spool records; idempotent (event ids come from the content)."""
    job = ImportJob.objects.select_related("mapping").get(pk=job_id)
    if job.status == ImportJob.Status.DONE:
        return job
    # Claimed by one worker only: a redelivered task (acks late) finds it taken.
    claimed = ImportJob.objects.filter(
        pk=job.pk, status__in=[ImportJob.Status.PENDING, ImportJob.Status.FAILED]
    ).update(status=ImportJob.Status.RUNNING)
    if not claimed:
        return job
    job.status = ImportJob.Status.RUNNING
    try:
        _convert(job, _encoding_of(Path(job.path)))
    except Exception as error:
        logger.exception("import %s failed", job.pk)
        job.status = ImportJob.Status.FAILED
        job.error = f"{type(error).__name__}: {error}"
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "error", "finished_at"])
        return job
    job.status = ImportJob.Status.DONE
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at"])
    # Its records are in the spool (and, once loaded, the archive); the upload holds personal
    # data and is not needed any more. A failed import keeps it for another run.
    Path(job.path).unlink(missing_ok=True)
    return job


def import_reports_prune(*, now: datetime) -> int:
    """Delete error reports (and leftover uploads) older than ARCHIVE_KEEP_DAYS."""
    directory = imports_dir()
    if not directory.is_dir():
        return 0
    horizon = (now - timedelta(days=settings.ARCHIVE_KEEP_DAYS)).timestamp()
    pruned = 0
    for path in directory.iterdir():
        if path.is_file() and path.stat().st_mtime < horizon:
            path.unlink(missing_ok=True)
            pruned += 1
    return pruned


def _encoding_of(path: Path) -> str:
    """UTF-8 (a byte-order mark allowed) if the whole file decodes so, else Latin-1.

    Decided before anything is spooled, so a late Latin-1 byte cannot leave half a file read
    the wrong way. Reads in 1 MB chunks.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    with path.open("rb") as file:
        try:
            while chunk := file.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "latin-1"
    return "utf-8-sig"


def _convert(job: ImportJob, encoding: str) -> None:
    mapping = job.mapping.columns
    now = timezone.now()
    job.encoding, job.rows, job.records, job.rejected_rows, job.bytes_done = encoding, 0, 0, 0, 0
    report = error_report_path(job)
    with open(job.path, "rb") as raw, report.open("w", newline="", encoding="utf-8") as out:
        errors = csv.writer(out)
        errors.writerow(["line", "reason"])
        batch: list[dict] = []
        for line, row in _rows(raw, job.mapping.format, encoding):
            job.rows += 1
            try:
                if isinstance(row, str):
                    raise RecordError(row)
                batch += row_records(row, mapping=mapping, client_id=job.client_id, now=now)
            except RecordError as error:
                job.rejected_rows += 1
                errors.writerow([line, cell_safe(str(error))])
            if job.rows % BATCH_ROWS == 0:
                _flush(job, batch, raw)
                batch = []
        _flush(job, batch, raw)


def _flush(job: ImportJob, batch: list[dict], raw: IO[bytes]) -> None:
    spool.spool_append(batch)
    job.records += len(batch)
    job.bytes_done = raw.tell()
    job.save(update_fields=["encoding", "rows", "records", "rejected_rows", "bytes_done"])


def _rows(raw: IO[bytes], kind: str, encoding: str) -> Iterator[tuple[int, dict | str]]:
    """(line number, row) pairs; a row that cannot be read is given as its reason."""
    text = io.TextIOWrapper(raw, encoding=encoding, newline="")
    try:
        yield from _rows_of(text, kind)
    finally:
        # Give the file back open: the wrapper would close it when collected.
        text.detach()


def _rows_of(text: IO[str], kind: str) -> Iterator[tuple[int, dict | str]]:
    if kind == ImportMapping.Format.CSV:
        reader = csv.DictReader(text)
        for row in reader:
            if None in row:
                yield reader.line_num, "more cells than the header names"
            else:
                yield reader.line_num, row
        return
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            yield number, "not JSON"
            continue
        if not isinstance(value, dict):
            yield number, "not a JSON object"
            continue
        yield number, {str(k): "" if v is None else str(v) for k, v in value.items()}


def error_report_path(job: ImportJob) -> Path:
    return imports_dir() / f"job-{job.pk}-errors.csv"
