import secrets
import zoneinfo

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


def public_key_generate() -> str:
    return "cm_" + secrets.token_urlsafe(12)


TIMEZONE_CHOICES = [(name, name) for name in sorted(zoneinfo.available_timezones())]


class Client(models.Model):
    """A web site owner using coremetrics: the tenant every other row belongs to."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    public_key = models.CharField(
        max_length=40,
        unique=True,
        default=public_key_generate,
        help_text="Names the client in the tag and in queries; public, not a secret.",
    )

    class ConsentMode(models.TextChoices):
        IMPLIED = "implied", "Track unless the visitor declines (or sends GPC / Do-Not-Track)"
        REQUIRED = "required", "Store and send nothing until the visitor consents"

    timezone = models.CharField(max_length=64, choices=TIMEZONE_CHOICES, default="UTC")
    consent_mode = models.CharField(
        max_length=10, choices=ConsentMode.choices, default=ConsentMode.IMPLIED
    )
    cookie_domain = models.CharField(
        max_length=253,
        blank=True,
        help_text="Domain of the visitor cookie, e.g. shop.example for all its subdomains; "
        "empty: the widest domain the browser accepts.",
    )
    tag_timeout_ms = models.PositiveIntegerField(
        default=1500,
        validators=[MinValueValidator(100), MaxValueValidator(10000)],
        help_text="Placements keep their default content if no answer comes within this time.",
    )
    is_active = models.BooleanField(default=True)
    is_heavy = models.BooleanField(
        "heavy client",
        default=False,
        help_text="Too much traffic for one delivery node: nginx routes its queries by campaign "
        "(client key and placements) instead of by client, spreading them over the nodes. "
        "Takes effect when the nginx configuration is rendered again (manage.py nginx_config) "
        "and nginx reloaded.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Site(models.Model):
    """An origin allowed to embed the client's tag and query delivery (CORS)."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="sites")
    origin = models.URLField(
        max_length=200, help_text="Scheme, host and port, e.g. https://shop.example.com"
    )

    class Meta:
        ordering = ["origin"]
        constraints = [
            models.UniqueConstraint(fields=["client", "origin"], name="site_client_origin_unique")
        ]

    def __str__(self) -> str:
        return self.origin


class Membership(models.Model):
    """A console user's client and role; a user without one (and not superuser) sees nothing."""

    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        MARKETER = "marketer", "Marketer"
        ADMIN = "admin", "Client admin"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MARKETER)

    def __str__(self) -> str:
        return f"{self.user} @ {self.client} ({self.role})"


class ApiToken(models.Model):
    """A client's key to the REST API (/api/v1), with a scope; only its hash is stored."""

    class Scope(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Read and write"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. 'nightly export'.")
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.READ)
    prefix = models.CharField(max_length=12, editable=False, help_text="Shown to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
