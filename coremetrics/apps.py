from django.apps import AppConfig


class CoremetricsConfig(AppConfig):
    name = "coremetrics"
    verbose_name = "Clients"
