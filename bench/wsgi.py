"""WSGI entry of the delivery benchmark's variant (d): coremetrics.wsgi with bench/urls.py.

The same settings and MIDDLEWARE as the project; only ROOT_URLCONF differs, so that one plain
view sits beside the project's URLs.
"""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coremetrics.settings")
# Before the first request: the URL resolver reads ROOT_URLCONF then.
settings.ROOT_URLCONF = "bench.urls"

application = get_wsgi_application()
