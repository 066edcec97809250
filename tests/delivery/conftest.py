import json
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest

from delivery.handler import DeliveryHandler
from segmentation.services import table_build
from tests.factories import AttachmentFactory, ProfileFactory


@pytest.fixture
def published():
    """A campaign whose table sends buyers to the attachment's content."""
    attachment = AttachmentFactory(segment__rule={"field": "purchases", "op": "gte", "value": 1})
    buyer = ProfileFactory(client=attachment.client, purchases=2)
    table_build(campaign_id=attachment.campaign_id)
    return attachment, buyer


class WsgiResponse:
    def __init__(self, status: str, headers: list, body: bytes):
        self.status_code = int(status.split()[0])
        self.headers = {name.lower(): value for name, value in headers}
        self.content = body

    def json(self):
        return json.loads(self.content)

    def __getitem__(self, name):
        return self.headers[name.lower()]

    def __contains__(self, name):
        return name.lower() in self.headers


class HandlerClient:
    """Requests through the lean WSGI handler in front of Django, as production serves them;
    anything it would hand on to Django fails the test."""

    def __init__(self):
        self.handler = DeliveryHandler(self._not_for_django)

    @staticmethod
    def _not_for_django(environ, start_response):
        raise AssertionError(f"{environ['PATH_INFO']} was handed on to Django")

    def request(self, method, path, data=None, **extra):
        path, _, query = path.partition("?")
        if data:
            query = "&".join(part for part in [query, urlencode(data)] if part)
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "HTTP_HOST": "testserver",
            "REMOTE_ADDR": "127.0.0.1",
        }
        setup_testing_defaults(environ)
        environ.update(extra)
        started = {}

        def start_response(status, headers, exc_info=None):
            started.update(status=status, headers=headers)

        body = b"".join(self.handler(environ, start_response))
        return WsgiResponse(started["status"], started["headers"], body)

    def get(self, path, data=None, **extra):
        return self.request("GET", path, data, **extra)

    def post(self, path, data=None, **extra):
        return self.request("POST", path, data, **extra)


@pytest.fixture(params=["django-view", "lean-handler"])
def query_client(request, client):
    """The query as the Django view answers it and as the production handler does."""
    return client if request.param == "django-view" else HandlerClient()
