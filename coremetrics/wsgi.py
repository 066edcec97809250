import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coremetrics.settings")

django_application = get_wsgi_application()

from delivery.handler import DeliveryHandler  # noqa: E402 (needs the settings configured)

# The delivery query is answered in front of Django's request cycle (delivery/handler.py).
application = DeliveryHandler(django_application)
