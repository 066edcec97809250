from functools import partial

from celery import shared_task
from django.db import transaction

from aggregation.services import spool_consolidate
from aggregation.services.imports import import_job_run


@shared_task(name="aggregation.consolidate")
def consolidate() -> dict:
    """Load closed spool files; rebuild the lookup tables of clients with new events (S4)."""
    run = spool_consolidate()
    from segmentation.tasks import build_tables

    for client_id in run.client_ids:
        transaction.on_commit(partial(build_tables.delay, client_id))
    return {"run": run.pk, "status": run.status, "loaded": run.loaded}


@shared_task(name="aggregation.import_run")
def import_run(job_id: int) -> dict:
    """Convert an uploaded customer file into the spool, then consolidate it."""
    job = import_job_run(job_id=job_id)
    if job.status == job.Status.DONE:
        transaction.on_commit(consolidate.delay)
    return {"job": job.pk, "status": job.status, "records": job.records}
