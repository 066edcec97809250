from segmentation.models import TableVersion


def table_versions_serving(*, client_id: int) -> dict[int, int]:
    """campaign id -> number of the table version now published, for one client."""
    return dict(
        TableVersion.objects.filter(
            client_id=client_id, status=TableVersion.Status.PUBLISHED
        ).values_list("campaign_id", "number")
    )
