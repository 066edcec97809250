from django.apps import AppConfig


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
