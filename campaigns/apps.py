from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class CampaignsConfig(AppConfig):
    name = "campaigns"

    def ready(self) -> None:
        from anymail.signals import tracking

        from campaigns.services.email_tracking import email_delivery_report

        # django-anymail reports a provider's webhooks as this signal; the receiver only
        # hands the report to the service.
        def delivery_reported(sender, event, esp_name, **kwargs) -> None:
            email_delivery_report(provider_id=event.message_id or "", event_type=event.event_type)

        tracking.connect(delivery_reported, weak=False, dispatch_uid="campaigns.delivery_report")
        checks.register(email_base_url_check, checks.Tags.security, deploy=True)


def email_base_url_check(app_configs, **kwargs) -> list:
    """`manage.py check --deploy`: messages' addresses over HTTPS (RFC 8058's one-click
    unsubscribe asks for it, and mail clients warn about plain links)."""
    if settings.EMAIL_BASE_URL.startswith("https://"):
        return []
    return [
        checks.Warning(
            f"EMAIL_BASE_URL is {settings.EMAIL_BASE_URL!r}: the tracking and unsubscribe "
            "addresses in messages should be https.",
            id="campaigns.W001",
        )
    ]
