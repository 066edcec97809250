from django.db.models import QuerySet

from coremetrics.models import Client


def clients_all(*, client_id: int | None = None) -> QuerySet[Client]:
    """Every client, active or not (or just one)."""
    clients = Client.objects.order_by("pk")
    return clients if client_id is None else clients.filter(pk=client_id)
