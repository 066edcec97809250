from django.apps import AppConfig
from django.db import connection
from django.db.models.signals import pre_delete


class AggregationConfig(AppConfig):
    name = "aggregation"

    def ready(self) -> None:
        from coremetrics.models import Client

        pre_delete.connect(client_loads_wait, sender=Client, dispatch_uid="client_loads_wait")


def client_loads_wait(sender, instance, **kwargs) -> None:
    """Before a client's rows are deleted, wait for any consolidation loading its events.

    Events have no foreign key constraint (aggregation.models.Event.client): a loader holds the
    file's clients instead (FOR KEY SHARE, consolidation._clients_hold). Locking the client for
    update waits for that load to commit, so that the deletion of its events, which comes
    next, sees them; a load starting later no longer finds the client and refuses its lines.
    """
    if connection.vendor != "postgresql":
        return  # SQLite: one writer at a time
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM coremetrics_client WHERE id = %s FOR UPDATE", [instance.pk])
