from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from coremetrics.models import Client
from delivery.criteria import conditions_check


class Content(models.Model):
    """Something delivery can answer with: the patent's banner, script, HTML, video or audio."""

    class Type(models.TextChoices):
        IMAGE = "image", "Image"
        SCRIPT = "script", "Script to execute"
        HTML = "html", "HTML fragment"
        VIDEO = "video", "Video"
        AUDIO = "audio", "Audio"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="contents")
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.IMAGE)
    url = models.URLField(
        max_length=1000, blank=True, help_text="Address of the image, script, video or audio."
    )
    click_url = models.URLField(max_length=1000, blank=True, help_text="Click-through address.")
    html = models.TextField(blank=True, help_text="The fragment itself, for HTML content.")
    alt_text = models.CharField(max_length=300, blank=True)
    is_approved = models.BooleanField(
        default=True,
        help_text=(
            "Script and HTML content runs in the client's pages: it serves once a client admin "
            "approved this version of it (a marketer's change waits for approval)."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "name"], name="content_client_name_unique"),
            models.CheckConstraint(
                condition=models.Q(type="html") | ~models.Q(url=""),
                name="content_url_required_unless_html",
            ),
            models.CheckConstraint(
                condition=~models.Q(type="html") | ~models.Q(html=""),
                name="content_html_required_for_html",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ContentChange(models.Model):
    """The audit log of script and HTML content: who created, changed, approved or deleted
    what, with the code before and after."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        APPROVED = "approved", "Approved"
        DELETED = "deleted", "Deleted"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="content_changes")
    content = models.ForeignKey(
        Content, on_delete=models.SET_NULL, null=True, blank=True, related_name="changes"
    )
    content_name = models.CharField(max_length=200)
    action = models.CharField(max_length=10, choices=Action.choices)
    by = models.CharField(max_length=200, help_text="The user, or the API token by name.")
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    is_approved = models.BooleanField(help_text="Whether the content serves after this change.")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["client", "-at"], name="contentchange_client_at_idx")]

    def __str__(self) -> str:
        return f"{self.content_name}: {self.action} by {self.by}"


class Placement(models.Model):
    """A spot on the client's pages (the patent's bannerID) that the tag fills."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="placements")
    key = models.SlugField(max_length=60, help_text="Used in the page: data-cm-placement=KEY")
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="placement_client_key_unique")
        ]

    def __str__(self) -> str:
        return self.name


class Campaign(models.Model):
    """What a placement shows to whom: the patent's expID, with its default content."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="campaigns")
    key = models.SlugField(max_length=60, help_text="The campaign id (expID) used in queries.")
    name = models.CharField(max_length=200)
    placement = models.ForeignKey(Placement, on_delete=models.PROTECT, related_name="campaigns")
    default_content = models.ForeignKey(
        Content,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Shown to visitors in none of the campaign's segments; empty shows nothing.",
    )
    is_active = models.BooleanField(default=True)

    class CapPeriod(models.TextChoices):
        DAY = "day", "Day (the client's time zone)"
        SESSION = "session", "Session"

    cap_views = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=(
            "Frequency cap: at most this many views of the campaign's personalized content per "
            "visitor and period; past it the visitor sees the default. Empty: no cap."
        ),
    )
    cap_period = models.CharField(max_length=10, choices=CapPeriod.choices, default=CapPeriod.DAY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="campaign_client_key_unique"),
            # One placement shows one campaign at a time; otherwise the answer is ambiguous.
            models.UniqueConstraint(
                fields=["placement"],
                condition=models.Q(is_active=True),
                name="campaign_one_active_per_placement",
            ),
        ]

    def __str__(self) -> str:
        return self.name


def _conditions_validate(value: object) -> None:
    errors = conditions_check(value)
    if errors:
        raise ValidationError(errors)


class Attachment(models.Model):
    """Content shown to a segment within a campaign; the lowest priority number wins."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="attachments")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="attachments")
    segment = models.ForeignKey(
        "segmentation.Segment", on_delete=models.PROTECT, related_name="attachments"
    )
    content = models.ForeignKey(Content, on_delete=models.PROTECT, related_name="attachments")
    priority = models.PositiveIntegerField(
        default=100, help_text="Decides for visitors in several segments: 1 beats 2."
    )
    conditions = models.JSONField(
        default=dict,
        blank=True,
        validators=[_conditions_validate],
        help_text=(
            "Request-time conditions, all of which must hold as well as the segment, e.g. "
            '{"devices": ["mobile"], "hours": {"from": 9, "to": 17}, "countries": ["DE"], '
            '"weekdays": [5, 6], "page_contains": "/sale", "referrer_contains": "google"}. '
            "Empty: the segment alone decides. See docs/delivery.md."
        ),
    )

    class Meta:
        ordering = ["campaign", "priority", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "segment"], name="attachment_campaign_segment_unique"
            ),
            models.UniqueConstraint(
                fields=["campaign", "priority"], name="attachment_campaign_priority_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.segment} → {self.content} (priority {self.priority})"
