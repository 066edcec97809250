from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from aggregation.models import ImportMapping
from aggregation.services import spool_consolidate
from aggregation.services.imports import error_report_path, import_job_create, import_job_run


class Command(BaseCommand):
    help = "Import a file of legacy customer records with a client's saved mapping (A4)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--client", type=int, required=True, help="The client's id.")
        parser.add_argument("--mapping", required=True, help="The name of a saved mapping.")
        parser.add_argument(
            "--no-consolidate", action="store_true", help="Leave loading to the schedule."
        )

    def handle(self, *args, file, client, mapping, no_consolidate, **options):
        try:
            saved = ImportMapping.objects.get(client_id=client, name=mapping)
        except ImportMapping.DoesNotExist:
            raise CommandError(f"client {client} has no mapping named {mapping!r}") from None
        with file.open("rb") as source:
            job = import_job_create(
                mapping=saved, file_name=file.name, source=source, enqueue=False
            )
        job = import_job_run(job_id=job.pk)
        self.stdout.write(
            f"{job.status}: {job.rows} rows ({job.encoding}), {job.records} records, "
            f"{job.rejected_rows} rejected (report: {error_report_path(job)})"
        )
        if job.status != job.Status.DONE:
            raise CommandError(job.error)
        if not no_consolidate:
            run = spool_consolidate()
            self.stdout.write(f"consolidated: {run.loaded} new events, {run.duplicates} known")
