"""The lean handler in front of Django: the same answers, the protections middleware gave."""

import json
import time

import pytest
from django.http import QueryDict
from hypothesis import given
from hypothesis import settings as settings_hypothesis
from hypothesis import strategies as st

from aggregation.spool import spool_seal_open
from delivery.handler import FORMS, DeliveryHandler, query_params
from delivery.query import query_reply
from tests.delivery.conftest import HandlerClient
from tests.delivery.test_query import QUERY

pytestmark = pytest.mark.django_db


def _params(published):
    attachment, buyer = published
    return {
        "k": attachment.client.public_key,
        "v": buyer.visitor_id,
        "p": attachment.campaign.placement.key,
        "s": f"{int(time.time()) - 60:x}.0123456789ab",
    }


def _spooled():
    return [line for path in spool_seal_open() for line in path.read_text().splitlines()]


def test_the_handler_and_the_django_view_give_the_same_answer(client, published, settings):
    params = _params(published)

    by_view = client.get(QUERY, {**params, "i": "5"})
    by_handler = HandlerClient().get(QUERY, {**params, "i": "5"})

    assert by_handler.content == by_view.content
    assert json.loads(by_handler.content)["session"] == params["s"]
    assert [by_handler[name] for name in ("Content-Type", "Cache-Control", "Vary")] == [
        by_view[name] for name in ("Content-Type", "Cache-Control", "Vary")
    ]
    assert by_handler["X-Content-Type-Options"] == "nosniff"
    assert by_handler["X-Coremetrics-Node"] == settings.NODE_NAME
    assert len(_spooled()) == 2


def test_a_host_outside_allowed_hosts_is_refused_and_not_recorded(published, settings):
    settings.ALLOWED_HOSTS = ["delivery.example"]

    refused = HandlerClient().get(QUERY, _params(published), HTTP_HOST="evil.example")
    allowed = HandlerClient().get(QUERY, _params(published), HTTP_HOST="delivery.example:8443")

    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "the Host header names no site of this server"},
    )
    assert allowed.status_code == 200
    link = allowed.json()["placements"][0]["content"]["click_url"]
    assert link.startswith("http://delivery.example:8443/d/v1/click?t=")
    assert len(_spooled()) == 1


def test_plain_http_is_redirected_when_https_is_required(published, settings):
    settings.SECURE_SSL_REDIRECT = True

    response = HandlerClient().get(f"{QUERY}?k=abc&v=def")

    assert (response.status_code, response["Location"]) == (
        301,
        "https://testserver/d/v1/query?k=abc&v=def",
    )
    assert _spooled() == []


def test_https_behind_the_proxy_gets_hsts_and_https_links(published, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600

    response = HandlerClient().get(QUERY, _params(published), HTTP_X_FORWARDED_PROTO="https")

    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=3600"
    link = response.json()["placements"][0]["content"]["click_url"]
    assert link.startswith("https://testserver/d/v1/click?t=")


def test_the_browsers_address_comes_from_the_proxy_only_when_it_is_trusted(
    published, settings, monkeypatch
):
    seen = []

    def form(request):
        seen.append(request.remote_addr)
        return query_reply(request)

    monkeypatch.setitem(FORMS, QUERY, form)
    forwarded = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.9"}

    untrusted = HandlerClient().get(QUERY, _params(published), **forwarded)
    settings.TRUST_X_FORWARDED_FOR = True
    trusted = HandlerClient().get(QUERY, _params(published), **forwarded)

    assert (untrusted.status_code, trusted.status_code) == (200, 200)
    assert seen == ["10.0.0.5", "203.0.113.9"]


def test_every_other_request_goes_to_django_untouched():
    seen = []

    def django(environ, start_response):
        seen.append(environ["PATH_INFO"])
        start_response("204 No Content", [])
        return [b""]

    handler = DeliveryHandler(django)
    for path in ["/d/v1/click", "/d/v1/query/", "/admin/", "/t/v1/cm_x.js"]:
        handler({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda *args: None)

    assert seen == ["/d/v1/click", "/d/v1/query/", "/admin/", "/t/v1/cm_x.js"]


def test_an_unexpected_failure_is_a_clean_500_with_a_reason(published, monkeypatch, caplog):
    def broken(request):
        raise RuntimeError("boom")

    monkeypatch.setitem(FORMS, QUERY, broken)

    response = HandlerClient().get(QUERY, _params(published))

    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    assert "delivery query failed" in caplog.text


@settings_hypothesis(max_examples=300, deadline=None)
@given(st.text(alphabet="ab=&%+2F0z;é ", max_size=40))
def test_the_handlers_query_parser_reads_what_django_reads(query_string):
    raw = query_string.encode().decode("latin-1")  # as WSGI hands it over

    expected = {name: values[-1] for name, values in QueryDict(query_string).lists()}

    assert query_params(raw, None) == expected


def test_a_query_with_too_many_parameters_is_refused(published, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5

    response = HandlerClient().get(QUERY + "?" + "&".join(f"x{n}=1" for n in range(6)))

    assert (response.status_code, response.json()) == (
        400,
        {"error": "the query has too many parameters"},
    )


def test_every_reply_of_the_handler_carries_the_security_headers(published, settings):
    refused_host = HandlerClient().get(QUERY, _params(published), HTTP_HOST="evil.example")
    wrong_method = HandlerClient().post(QUERY, _params(published))

    for response in (refused_host, wrong_method):
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Coremetrics-Node"] == settings.NODE_NAME
    assert (wrong_method.status_code, wrong_method["Allow"]) == (405, "GET")


def test_a_fragment_runs_sandboxed_away_from_this_sites_cookies(published):
    attachment, buyer = published
    params = {"k": attachment.client.public_key, "v": buyer.visitor_id,
              "p": attachment.campaign.placement.key}  # fmt: skip

    response = HandlerClient().get("/d/v1/content", params)

    assert response["Content-Security-Policy"] == (
        "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox"
    )
