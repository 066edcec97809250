from django.db.models import QuerySet

from coremetrics.models import Client


def clients_all(*, client_id: int | None = None) -> QuerySet[Client]:
    """Every client, active or not (or just one)."""
    clients = Client.objects.order_by("pk")
    return clients if client_id is None else clients.filter(pk=client_id)


def clients_heavy_keys() -> list[str]:
    """The public keys of the clients marked heavy (routed by campaign over delivery nodes)."""
    return list(
        Client.objects.filter(is_heavy=True)
        .order_by("public_key")
        .values_list("public_key", flat=True)
    )
