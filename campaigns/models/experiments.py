import secrets

from django.core.validators import MaxValueValidator
from django.db import models

from campaigns.models.content import Attachment, Content
from coremetrics.models import Client


def _salt() -> str:
    return secrets.token_hex(8)


class Experiment(models.Model):
    """An A/B test of an attachment's segment (C1): its visitors split into a control group,
    test groups and an optional holdout, each by a share of 10,000 buckets (bucketing.py)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        ENDED = "ended", "Ended"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="experiments")
    attachment = models.ForeignKey(
        Attachment,
        on_delete=models.PROTECT,
        related_name="experiments",
        help_text="The campaign and segment under test.",
    )
    name = models.CharField(max_length=200)
    salt = models.CharField(
        max_length=32, default=_salt, help_text="Mixed into every visitor's bucket; never reused."
    )
    holdout_share = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(10_000)],
        help_text="Basis points (1/100 of a percent) of the segment that see nothing at all.",
    )
    allocation = models.JSONField(default=list, blank=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    minimum_days = models.PositiveIntegerField(
        default=14, help_text="No winner is suggested before the test has run this long."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    winner = models.ForeignKey(
        "ExperimentGroup", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "A/B test"
        constraints = [
            models.UniqueConstraint(fields=["client", "name"], name="experiment_client_name"),
            models.UniqueConstraint(
                fields=["attachment"],
                condition=models.Q(status="running"),
                name="experiment_one_running_per_attachment",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ExperimentGroup(models.Model):
    """A group of a test: what its visitors see, and its share in basis points."""

    class Shows(models.TextChoices):
        CONTENT = "content", "The content chosen"
        DEFAULT = "default", "The campaign's default"
        NOTHING = "nothing", "Nothing"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="groups")
    key = models.SlugField(max_length=40, help_text="Short name, fixed once the test runs.")
    name = models.CharField(max_length=200)
    is_control = models.BooleanField(default=False)
    share = models.PositiveIntegerField(
        validators=[MaxValueValidator(10_000)], help_text="Basis points: 2500 is 25%."
    )
    shows = models.CharField(max_length=10, choices=Shows.choices, default=Shows.CONTENT)
    content = models.ForeignKey(
        Content, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["experiment", "-is_control", "key"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="experimentgroup_key")
        ]

    def __str__(self) -> str:
        return f"{self.experiment}: {self.name}"


class Assignment(models.Model):
    """A visitor of a running test's segment and the group they are in, written by each table
    build (the group follows from the bucket; kept so results count whoever was assigned)."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments")
    visitor_id = models.CharField(max_length=64)
    group_key = models.CharField(max_length=40)
    assigned_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "visitor_id"], name="assignment_experiment_visitor"
            )
        ]

    def __str__(self) -> str:
        return f"{self.visitor_id} in {self.group_key}"
