from django.db import models

from coremetrics.models import Client


class Visitor(models.Model):
    """A server-issued visitor id (D5) and the server-side copy of the visitor's cookie data."""

    # No index of its own: the unique (client, visitor_id) index begins with the client.
    client = models.ForeignKey(
        Client, on_delete=models.CASCADE, related_name="visitors", db_index=False
    )
    visitor_id = models.CharField(max_length=64)
    cookie_data = models.JSONField(default=dict, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "visitor_id"], name="visitor_client_visitor_unique"
            )
        ]

    def __str__(self) -> str:
        return self.visitor_id
