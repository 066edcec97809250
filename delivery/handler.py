"""The lean front of the WSGI application (D2): the delivery query answered before Django's
request cycle, every other request passed to Django untouched.

Middleware, URL resolving and the request/response objects cost about ten times the answer
itself. This handler does for the one hot path what the middleware would have done for it:
it refuses hosts outside ALLOWED_HOSTS, redirects to HTTPS when SECURE_SSL_REDIRECT says so,
and sets the security headers Django's SecurityMiddleware sets; the answer itself comes from
delivery/query.py, which the Django view shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import unquote_plus

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host

from delivery.criteria import criteria_warm_up
from delivery.identity import client_address
from delivery.query import (
    FRAGMENT_PATH,
    IMAGE_PATH,
    QUERY_PATH,
    QueryRequest,
    Reply,
    error_reply,
    fragment_reply,
    image_reply,
    query_reply,
)
from delivery.selectors import QueryError
from delivery.tables import local_tables

logger = logging.getLogger(__name__)

WSGIApplication = Callable[[dict, Callable], Iterable[bytes]]
STATUS_LINES = {200: "200 OK", 301: "301 Moved Permanently", 302: "302 Found"}
STATUS_LINES |= {400: "400 Bad Request"}
STATUS_LINES |= {403: "403 Forbidden", 404: "404 Not Found", 405: "405 Method Not Allowed"}
STATUS_LINES |= {500: "500 Internal Server Error"}


# The paths answered here; everything else is Django's. Looked up on every request.
FORMS: dict[str, Callable[[QueryRequest], Reply]] = {
    QUERY_PATH: query_reply,
    FRAGMENT_PATH: fragment_reply,
    IMAGE_PATH: image_reply,
}


@dataclass
class _Config:
    """The settings the hot path reads, taken once: each read of django.conf.settings costs
    about half a microsecond, and a query would make a dozen."""

    allowed_hosts: list[str]
    use_forwarded_host: bool
    is_proxy_trusted: bool
    proxy_ssl_header: tuple[str, str] | None
    ssl_redirect: bool
    max_fields: int | None
    public_base_url: str
    headers: dict[bool, list[tuple[str, str]]]
    hosts: dict[str, bool] = field(default_factory=dict)


@cache
def _config() -> _Config:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return _Config(
        allowed_hosts=allowed,
        use_forwarded_host=settings.USE_X_FORWARDED_HOST,
        is_proxy_trusted=settings.TRUST_X_FORWARDED_FOR,
        proxy_ssl_header=settings.SECURE_PROXY_SSL_HEADER,
        ssl_redirect=settings.SECURE_SSL_REDIRECT,
        max_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
        public_base_url=settings.PUBLIC_BASE_URL,
        headers={
            is_secure: [("X-Coremetrics-Node", settings.NODE_NAME), *_security_headers(is_secure)]
            for is_secure in (False, True)
        },
    )


@receiver(setting_changed)
def _config_forget(**kwargs: object) -> None:
    _config.cache_clear()


class DeliveryHandler:
    def __init__(self, application: WSGIApplication):
        self._application = application
        # Load this node's tables and the user agent rules now, not in the first queries.
        local_tables().start()
        criteria_warm_up()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        form = FORMS.get(environ.get("PATH_INFO", ""))
        if form is None:
            return self._application(environ, start_response)
        config = _config()
        try:
            reply, is_secure = self._reply(environ, form, config)
        except Exception:
            logger.exception("delivery query failed")
            reply, is_secure = error_reply(QueryError(500, "internal error")), False
        status = STATUS_LINES.get(reply.status) or f"{reply.status} Error"
        body = reply.body
        headers = [*reply.headers, *config.headers[is_secure], ("Content-Length", str(len(body)))]
        start_response(status, headers)
        return [body]

    def _reply(
        self, environ: dict, form: Callable[[QueryRequest], Reply], config: _Config
    ) -> tuple[Reply, bool]:
        """The reply, and whether the request came over HTTPS (for the HSTS header)."""
        host = _host(environ, config)
        if host is None:
            error = QueryError(400, "the Host header names no site of this server")
            return error_reply(error), False
        is_secure = _is_secure(environ, config)
        if environ.get("REQUEST_METHOD") != "GET":
            reply = error_reply(QueryError(405, "the query is a GET"))
            reply.headers.append(("Allow", "GET"))
            return reply, is_secure
        query_string = environ.get("QUERY_STRING", "")
        if config.ssl_redirect and not is_secure:
            location = f"https://{host}{environ['PATH_INFO']}"
            location += f"?{query_string}" if query_string else ""
            return Reply(301, [("Location", location), ("Content-Type", "text/plain")], b""), False
        try:
            params = query_params(query_string, config.max_fields)
        except ValueError:
            return error_reply(QueryError(400, "the query has too many parameters")), is_secure
        reply = form(
            QueryRequest(
                params=params,
                origin=environ.get("HTTP_ORIGIN"),
                is_private=environ.get("HTTP_SEC_GPC") == "1",
                remote_addr=client_address(environ, is_proxy_trusted=config.is_proxy_trusted),
                user_agent=environ.get("HTTP_USER_AGENT", ""),
                base_url=config.public_base_url or f"{'https' if is_secure else 'http'}://{host}",
            )
        )
        return reply, is_secure


def _host(environ: dict, config: _Config) -> str | None:
    """The request's host if ALLOWED_HOSTS takes it (as HttpRequest.get_host decides)."""
    if config.use_forwarded_host and "HTTP_X_FORWARDED_HOST" in environ:
        host = environ["HTTP_X_FORWARDED_HOST"]
    elif "HTTP_HOST" in environ:
        host = environ["HTTP_HOST"]
    else:
        host = environ.get("SERVER_NAME", "")
        port = str(environ.get("SERVER_PORT", ""))
        if port and port != ("443" if environ.get("wsgi.url_scheme") == "https" else "80"):
            host = f"{host}:{port}"
    is_allowed = config.hosts.get(host)
    if is_allowed is None:
        domain, _ = split_domain_port(host)
        is_allowed = bool(domain) and validate_host(domain, config.allowed_hosts)
        # Bounded: made-up Host headers cost a check each once this is full.
        if len(config.hosts) < 1000:
            config.hosts[host] = is_allowed
    return host if is_allowed else None


def query_params(query_string: str, max_fields: int | None) -> dict[str, str]:
    """The query's parameters, the last of a repeated name winning, as Django's request.GET
    reads them; a third of parse_qsl's cost, since most of ours need no unquoting."""
    if not query_string:
        return {}
    if not query_string.isascii():
        # WSGI hands over the raw bytes as Latin-1; the query is UTF-8 (as Django reads it).
        query_string = query_string.encode("latin-1").decode("utf-8", "replace")
    pairs = query_string.split("&")
    if max_fields is not None and len(pairs) > max_fields:
        raise ValueError("too many fields")
    params = {}
    is_quoted = "%" in query_string or "+" in query_string
    for pair in pairs:
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if is_quoted:
            name, value = unquote_plus(name), unquote_plus(value)
        params[name] = value
    return params


def _is_secure(environ: dict, config: _Config) -> bool:
    if config.proxy_ssl_header:
        header, secure_value = config.proxy_ssl_header
        value = environ.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"


def _security_headers(is_secure: bool) -> list[tuple[str, str]]:
    headers = []
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append(("Referrer-Policy", str(settings.SECURE_REFERRER_POLICY)))
    if is_secure and settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append(("Strict-Transport-Security", value))
    return headers
