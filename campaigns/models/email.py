import secrets
from email.utils import parseaddr

from django.core.exceptions import ValidationError
from django.core.mail.message import sanitize_address
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models
from django.db.models.functions import Lower

from campaigns.mailtemplates import template_check
from coremetrics.models import Client


def _salt() -> str:
    return secrets.token_hex(8)


def sender_validate(value: str) -> None:
    # A sender the mail library refuses would fail every message of every mailing.
    try:
        sanitize_address(value, "utf-8")
        validate_email(parseaddr(value)[1])
        is_valid = "\n" not in value and "\r" not in value
    except (ValueError, ValidationError):
        is_valid = False
    if not is_valid:
        raise ValidationError("An address, or a name with the address in angle brackets.")


def text_template_validate(value: str) -> None:
    problems = template_check(value, is_html=False)
    if problems:
        raise ValidationError(problems)


def html_template_validate(value: str) -> None:
    problems = template_check(value, is_html=True)
    if problems:
        raise ValidationError(problems)


class EmailCampaign(models.Model):
    """An email to the visitors of segments (C2): templates personalized from their profiles,
    sent by hand, once at a time or on a recurring beat schedule, tracked and attributed."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active (sends when started or scheduled)"
        PAUSED = "paused", "Paused (nothing is sent)"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="email_campaigns")
    name = models.CharField(max_length=200)
    segments = models.ManyToManyField(
        "segmentation.Segment",
        related_name="email_campaigns",
        help_text="Mailed: the visitors of any of these segments who gave an address.",
    )
    excluded_segments = models.ManyToManyField(
        "segmentation.Segment",
        related_name="email_campaigns_excluding",
        blank=True,
        help_text="Never mailed: the visitors of any of these segments.",
    )
    from_email = models.CharField(
        max_length=254,
        validators=[sender_validate],
        help_text="The sender: an address, or a name with the address in angle brackets.",
    )
    reply_to = models.EmailField(max_length=254, blank=True)
    subject = models.CharField(
        max_length=300,
        validators=[text_template_validate],
        help_text="A template, like the bodies: Hello {{ attributes.first_name }}.",
    )
    subject_b = models.CharField(
        max_length=300,
        blank=True,
        validators=[text_template_validate],
        help_text="A second subject to test against the first (an A/B test of subjects).",
    )
    subject_b_share = models.PositiveIntegerField(
        default=5000,
        validators=[MaxValueValidator(10_000)],
        help_text="Basis points of the mailed recipients who get the second subject.",
    )
    html_body = models.TextField(
        validators=[html_template_validate],
        help_text="HTML template; docs/email.md lists the fields it may use.",
    )
    text_body = models.TextField(
        validators=[text_template_validate], help_text="Plain-text template of the same message."
    )
    holdout_share = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(5_000)],
        help_text="Basis points of the audience never mailed, to measure the lift against.",
    )
    attribution_days = models.PositiveIntegerField(
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(90)],
        help_text="A purchase this many days after a click (or the mailing) counts for it.",
    )
    rate_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Throttle: at most this many messages a minute. Empty: as fast as possible.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    schedule = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        help_text="Its entry in the beat schedule (Periodic tasks), when it is scheduled.",
    )
    salt = models.CharField(max_length=32, default=_salt, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "name"], name="emailcampaign_client_name")
        ]

    def __str__(self) -> str:
        return self.name


class EmailMailing(models.Model):
    """One sending of a campaign: its recipients chosen once, then mailed in batches."""

    class Status(models.TextChoices):
        PREPARING = "preparing", "Choosing its recipients"
        SENDING = "sending", "Sending"
        DONE = "done", "Done"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    campaign = models.ForeignKey(EmailCampaign, on_delete=models.CASCADE, related_name="mailings")
    occurrence = models.DateTimeField(
        help_text="The moment it was due: a beat entry firing twice for it sends it once."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PREPARING)
    recipients = models.PositiveIntegerField(default=0, help_text="Mailed and held out.")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-occurrence"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "occurrence"], name="emailmailing_campaign_occurrence"
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign} at {self.occurrence:%Y-%m-%d %H:%M}"


class EmailMessage(models.Model):
    """One recipient of a mailing: the message sent to them, or their place in the holdout."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        SENDING = "sending", "Being sent"
        SENT = "sent", "Sent"
        BOUNCED = "bounced", "Bounced"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted (not sent again: it may have arrived)"
        SUPPRESSED = "suppressed", "Not sent: unsubscribed or bounced since it was chosen"
        HELD_OUT = "held_out", "Held out (not mailed)"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    mailing = models.ForeignKey(EmailMailing, on_delete=models.CASCADE, related_name="messages")
    campaign = models.ForeignKey(EmailCampaign, on_delete=models.CASCADE, related_name="+")
    visitor_id = models.CharField(max_length=64)
    email = models.EmailField(max_length=254)
    group = models.CharField(max_length=10, help_text="Subject a or b, or holdout.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    message_id = models.CharField(max_length=200, blank=True, help_text="Its Message-ID header.")
    provider_id = models.CharField(max_length=200, blank=True, help_text="The sender's own id.")
    error = models.CharField(max_length=500, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Never mailed twice in one mailing, whatever the case of the address.
            models.UniqueConstraint("mailing", Lower("email"), name="emailmessage_mailing_email")
        ]
        indexes = [
            # The sender's claim: the next waiting message of a mailing, in id order.
            models.Index(fields=["mailing", "status", "id"], name="emailmessage_mailing_status"),
            # Providers' delivery reports name their own message id.
            models.Index(
                fields=["provider_id"],
                condition=~models.Q(provider_id=""),
                name="emailmessage_provider_id",
            ),
            models.Index(fields=["campaign", "visitor_id"], name="emailmessage_campaign_visitor"),
        ]

    def __str__(self) -> str:
        return f"{self.email} ({self.get_status_display()})"


class EmailActivity(models.Model):
    """An open or a click of a message as recorded (loaded from the spool); whether a person
    or a machine did it is decided when reading (campaigns/mailtracking.py)."""

    class Kind(models.TextChoices):
        OPEN = "open", "Open"
        CLICK = "click", "Click"

    event_id = models.UUIDField(unique=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(EmailMessage, on_delete=models.CASCADE, related_name="activities")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    at = models.DateTimeField()
    url = models.CharField(max_length=2000, blank=True)
    is_decoy = models.BooleanField(default=False, help_text="A click on the hidden decoy link.")
    user_agent = models.CharField(max_length=300, blank=True)
    ip = models.CharField(max_length=45, blank=True, help_text="Truncated, as every address.")

    class Meta:
        ordering = ["at", "id"]
        verbose_name_plural = "email activities"

    def __str__(self) -> str:
        return f"{self.kind} of {self.message_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class EmailSuppression(models.Model):
    """An address the client never mails again: unsubscribed, bounced, or complained."""

    class Reason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained (marked as spam)"
        MANUAL = "manual", "Added by hand"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    email = models.EmailField(max_length=254, help_text="Lower-cased.")
    reason = models.CharField(max_length=12, choices=Reason.choices)
    message = models.ForeignKey(
        EmailMessage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "email"], name="emailsuppression_client_email"
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} ({self.get_reason_display()})"
