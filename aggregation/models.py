from django.db import models
from django.db.models.functions import Lower

from coremetrics.models import Client


class Event(models.Model):
    """One recorded activity: a delivery answer or something the tag tracked (A1-A3)."""

    class Type(models.TextChoices):
        DELIVERY = "delivery", "Delivery"
        CLICK = "click", "Click-through"
        PAGE_VIEW = "page_view", "Page view"
        PRODUCT_VIEW = "product_view", "Product view"
        CATEGORY_VIEW = "category_view", "Category view"
        SEARCH = "search", "Search"
        CART_ADD = "cart_add", "Cart add"
        CART_REMOVE = "cart_remove", "Cart remove"
        CHECKOUT = "checkout", "Checkout"
        PURCHASE = "purchase", "Purchase"
        CUSTOM = "custom", "Custom"

    event_id = models.UUIDField()
    # No index of its own: the two below begin with the client (each index costs every load).
    # No foreign key constraint in the database either: its check, a lookup and a row lock for
    # every event at commit, took 3 us of the 7 an event cost to load. The loader locks each
    # client of a file once instead (consolidation._clients_hold); deleting a client deletes
    # its events all the same (Django's CASCADE).
    client = models.ForeignKey(
        Client,
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,
        db_constraint=False,
    )
    type = models.CharField(max_length=20, choices=Type.choices)
    visitor_id = models.CharField(max_length=64)
    session_id = models.CharField(max_length=64, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    url = models.CharField(max_length=2000, blank=True)
    referrer = models.CharField(max_length=2000, blank=True)
    campaign_key = models.CharField(max_length=60, blank=True)
    placement_key = models.CharField(max_length=60, blank=True)
    content_id = models.BigIntegerField(null=True, blank=True)
    table_version = models.PositiveIntegerField(null=True, blank=True)
    product_id = models.CharField(max_length=100, blank=True)
    category = models.CharField(max_length=100, blank=True)
    order_id = models.CharField(max_length=100, blank=True)
    value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    email = models.EmailField(max_length=254, blank=True)
    properties = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            # Ids come from browsers; one client's ids must never suppress another's events.
            models.UniqueConstraint(fields=["client", "event_id"], name="event_client_id_unique")
        ]
        # Time-window reads use a BRIN index on occurred_at (PostgreSQL only: migration 0003).
        indexes = [models.Index(fields=["client", "visitor_id", "occurred_at"])]

    def __str__(self) -> str:
        return f"{self.type} {self.visitor_id} {self.occurred_at:%Y-%m-%d %H:%M}"


class Profile(models.Model):
    """Everything aggregated about one visitor of one client (A5); rebuilt from events."""

    class Source(models.TextChoices):
        DIRECT = "direct", "Direct"
        REFERRAL = "referral", "Referral"
        SEARCH = "search", "Search engine"
        CAMPAIGN = "campaign", "Campaign"
        EMAIL = "email", "Email"

    # No index of its own: the unique (client, visitor_id) index begins with the client.
    client = models.ForeignKey(
        Client, on_delete=models.CASCADE, related_name="profiles", db_index=False
    )
    visitor_id = models.CharField(max_length=64)
    visits = models.PositiveIntegerField(default=0)
    page_views = models.PositiveIntegerField(default=0)
    product_views = models.PositiveIntegerField(default=0)
    products_viewed = models.PositiveIntegerField(default=0, help_text="Distinct products.")
    categories = models.JSONField(
        default=dict, blank=True, help_text="Views per category (product and category views)."
    )
    cart_adds = models.PositiveIntegerField(default=0)
    cart_removes = models.PositiveIntegerField(default=0)
    cart_abandonments = models.PositiveIntegerField(default=0)
    purchases = models.PositiveIntegerField(default=0)
    total_spent = models.DecimalField(max_digits=20, decimal_places=2, default=0)
    average_order_value = models.DecimalField(max_digits=20, decimal_places=2, default=0)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.DIRECT)
    email = models.EmailField(max_length=254, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)
    # What the profile was finished from (aggregation.profiles.ProfileTally.state, as JSON
    # text): the next consolidation adds its events to it instead of reading the visitor's
    # history. Null when the visitor has too much history to keep (then it is recomputed from
    # its events). Text, not jsonb: nothing queries inside it, and PostgreSQL took twice as
    # long to write it as jsonb (parsed, then compressed by pglz; text is compressed by lz4).
    tally = models.TextField(null=True, blank=True, editable=False)  # noqa: DJ001 (null: not kept)

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "visitor_id"], name="profile_client_visitor_unique"
            )
        ]
        indexes = [
            # Identity stitching looks visitors up by address, without case.
            models.Index("client", Lower("email"), name="profile_client_email_idx")
        ]

    def __str__(self) -> str:
        return self.visitor_id


class ConsolidationRun(models.Model):
    """One pass of the consolidation job over closed spool files (A3)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (another run was under way)"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    files = models.PositiveIntegerField(default=0)
    lines = models.PositiveIntegerField(default=0)
    loaded = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    bad_lines = models.PositiveIntegerField(default=0)
    profiles_updated = models.PositiveIntegerField(default=0)
    client_ids = models.JSONField(
        default=list, blank=True, help_text="Clients whose events this run loaded."
    )
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"Consolidation {self.started_at:%Y-%m-%d %H:%M:%S} ({self.status})"


class ImportMapping(models.Model):
    """How a client's legacy customer files map onto our fields (aggregation/imports.py)."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV (comma-separated, first line names the columns)"
        JSONL = "jsonl", "JSON lines (one object per line)"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="import_mappings")
    name = models.CharField(max_length=100)
    format = models.CharField(max_length=5, choices=Format.choices, default=Format.CSV)
    columns = models.JSONField(
        help_text='Our field -> your column, e.g. {"customer_id": "Customer No", '
        '"email": "E-mail", "order_id": "Order", "order_date": "Date", "order_total": "Total", '
        '"attributes": ["Tier"]}'
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "name"], name="importmapping_client_name")
        ]

    def __str__(self) -> str:
        return self.name


class ImportJob(models.Model):
    """One upload of legacy customer records, converted into the spool."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to start"
        RUNNING = "running", "Converting"
        DONE = "done", "Converted; loaded by the next consolidation"
        FAILED = "failed", "Failed"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="import_jobs")
    mapping = models.ForeignKey(ImportMapping, on_delete=models.PROTECT, related_name="jobs")
    file_name = models.CharField(max_length=255)
    path = models.CharField(max_length=500, help_text="Where the uploaded file is kept.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    encoding = models.CharField(max_length=20, blank=True)
    bytes_total = models.PositiveBigIntegerField(default=0)
    bytes_done = models.PositiveBigIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0)
    records = models.PositiveIntegerField(default=0)
    rejected_rows = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.status})"

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return int(100 * self.bytes_done / self.bytes_total) if self.bytes_total else 0


class VisitorLink(models.Model):
    """One visitor id joined to another's profile (B5): same client, same email address.

    The canonical visitor is the one seen first; its profile holds the events of every visitor
    linked to it, and the lookup tables answer the linked ids as they answer the canonical one.
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="visitor_links")
    visitor_id = models.CharField(max_length=64)
    canonical_id = models.CharField(max_length=64)
    email = models.EmailField(max_length=254)
    linked_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-linked_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "visitor_id"], name="visitorlink_client_visitor_unique"
            )
        ]
        indexes = [models.Index(fields=["client", "canonical_id"])]

    def __str__(self) -> str:
        return f"{self.visitor_id} → {self.canonical_id}"


class VisitorSeparation(models.Model):
    """A join a marketer undid (B5): this visitor is never joined again under this email."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="visitor_separations")
    visitor_id = models.CharField(max_length=64)
    email = models.EmailField(max_length=254)
    separated_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-separated_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "visitor_id", "email"], name="visitorseparation_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.visitor_id} kept apart from {self.email}"
