from celery import shared_task
from django.db import transaction

from aggregation.services import spool_consolidate


@shared_task(name="aggregation.consolidate")
def consolidate() -> dict:
    """Load closed spool files; when new events arrived, rebuild the lookup tables (S4)."""
    run = spool_consolidate()
    if run.loaded:
        from segmentation.tasks import build_tables

        transaction.on_commit(build_tables.delay)
    return {"run": run.pk, "status": run.status, "loaded": run.loaded}
