from django.db import models

from coremetrics.models import Client


class Segment(models.Model):
    """A group of visitors described by a rule over their profiles (rules.py)."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    rule = models.JSONField(help_text="The rule as data; see docs/segments.md.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "name"], name="segment_client_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class TableVersion(models.Model):
    """One build of a campaign's lookup table (visitor id -> content); published ones serve."""

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Built, waiting to be published"
        PUBLISHED = "published", "Published"
        SUPERSEDED = "superseded", "Superseded"
        FAILED = "failed", "Failed"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="table_versions")
    campaign = models.ForeignKey(
        "campaigns.Campaign", on_delete=models.CASCADE, related_name="table_versions"
    )
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.BUILDING)
    visitor_count = models.PositiveIntegerField(default=0)
    content_counts = models.JSONField(default=dict, blank=True)
    segment_counts = models.JSONField(default=dict, blank=True)
    segment_seconds = models.JSONField(
        default=dict, blank=True, help_text="Seconds each segment's evaluation took."
    )
    overlaps = models.JSONField(
        default=list,
        blank=True,
        help_text="Visitors in several attached segments: [{winner, other, visitors}], the "
        "winner being the attachment of lower priority number.",
    )
    diff = models.JSONField(
        default=list,
        blank=True,
        help_text="Visitors moving from one content to another against the version serving "
        "when this one was built: [{from, to, visitors}], most first.",
    )
    diff_against = models.PositiveIntegerField(
        null=True, blank=True, help_text="The version number the diff compares with."
    )
    is_pinned = models.BooleanField(
        default=False,
        help_text="Published by hand over a newer version (a rollback): automatic builds wait "
        "as previews until someone publishes again.",
    )
    is_stored = models.BooleanField(
        default=True, help_text="Still in the table store, so it can be published again."
    )
    checksum = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the table.")
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "number"], name="tableversion_campaign_number_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign} v{self.number} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
