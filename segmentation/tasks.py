from celery import shared_task

from segmentation.services import table_build, tables_build


@shared_task(name="segmentation.build_tables")
def build_tables(client_id: int | None = None) -> list[dict]:
    """Build and publish every active campaign's lookup table."""
    return [
        {"campaign": version.campaign_id, "version": version.number, "status": version.status}
        for version in tables_build(client_id=client_id)
    ]


@shared_task(name="segmentation.build_table")
def build_table(campaign_id: int, publish: bool = True) -> dict:
    """Build one campaign's table; publish it, or keep it as a preview to publish by hand."""
    version = table_build(campaign_id=campaign_id, publish=publish)
    return {"campaign": campaign_id, "version": version.number, "status": version.status}
