"""Delivery's HTTP interface: the query, visitor ids and the served tag (D1, D5, T1)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from aggregation.services import click_spool
from delivery.clicks import ClickError, click_read
from delivery.identity import client_address, ip_truncate, session_id_issue, visitor_id_issue
from delivery.query import (
    QueryRequest,
    Reply,
    answer_headers,
    error_reply,
    fragment_reply,
    image_reply,
    query_reply,
)
from delivery.selectors import QueryError, client_view_get
from delivery.stores import store_get
from delivery.tables import local_tables
from delivery.tag import tag_body

logger = logging.getLogger(__name__)


def _privacy_signal(request: HttpRequest) -> bool:
    """Global Privacy Control (the Sec-GPC header): nothing is issued or recorded."""
    return request.headers.get("Sec-GPC") == "1"


def _response(reply: Reply) -> HttpResponse:
    response = HttpResponse(reply.body, status=reply.status)
    for name, value in reply.headers:
        response[name] = value
    response["X-Coremetrics-Node"] = settings.NODE_NAME
    return response


def _delivery_view(form: Callable[[QueryRequest], Reply], doc: str) -> Callable:
    """A Django view over one of delivery/query.py's answer forms; in production
    delivery/handler.py answers these paths before Django sees them."""

    @require_GET
    @xframe_options_exempt
    def view(request: HttpRequest) -> HttpResponse:
        reply = form(
            QueryRequest(
                params=request.GET,
                origin=request.headers.get("Origin"),
                is_private=_privacy_signal(request),
                remote_addr=client_address(request.META),
                user_agent=request.headers.get("User-Agent", ""),
                base_url=settings.PUBLIC_BASE_URL or request.build_absolute_uri("/").rstrip("/"),
            )
        )
        return _response(reply)

    view.__doc__ = doc
    return view


query = _delivery_view(query_reply, "Which content this visitor sees in each placement (JSON).")
fragment = _delivery_view(fragment_reply, "The content of one placement as an HTML fragment.")
image = _delivery_view(image_reply, "The image of one placement, for places without JavaScript.")


@require_GET
def click(request: HttpRequest) -> HttpResponse:
    """Record a click-through and send the browser to the content's stored address (D1)."""
    try:
        data = click_read(
            request.GET.get("t", ""),
            visitor_id=request.GET.get("v", ""),
            session_id=request.GET.get("s", ""),
            mac=request.GET.get("m", ""),
        )
        view = client_view_get(key=data["k"])
    except (ClickError, QueryError) as error:
        return HttpResponse(f"{error}\n", status=400, content_type="text/plain; charset=utf-8")
    try:
        click_spool(
            client_id=view.client_id,
            visitor_id=data["v"],
            session_id=data["s"],
            campaign_key=data["c"],
            content_id=data["n"],
            table_version=data["t"],
            referrer=request.headers.get("Referer", ""),
            at=timezone.now(),
        )
    except OSError:
        # The browser still goes where the visitor wanted; the lost record is in the log.
        logger.exception("could not spool a click")
    response = HttpResponseRedirect(data["u"])
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer-when-downgrade"
    return response


@csrf_exempt
@require_http_methods(["POST"])
def visitor(request: HttpRequest) -> HttpResponse:
    """Issue a new visitor id and session id (D5, T2)."""
    try:
        view = client_view_get(key=request.GET.get("k", ""))
        if _privacy_signal(request):
            raise QueryError(403, "Global Privacy Control is on: no visitor id is issued")
    except QueryError as error:
        return _response(error_reply(error))
    visitor_id = visitor_id_issue()
    session_id = session_id_issue(
        client_key=view.public_key,
        visitor_id=visitor_id,
        ip=ip_truncate(client_address(request.META)),
        now=time.time(),
    )
    headers = answer_headers(request.headers.get("Origin"), view, "application/json")
    return _response(
        Reply(200, headers, orjson.dumps({"visitor": visitor_id, "session": session_id}))
    )


@require_GET
def tag(request: HttpRequest, public_key: str, version: str = "") -> HttpResponse:
    """The tag, configured for one client (T1); a versioned address is cached for good."""
    view = local_tables().client(public_key)
    if view is None:
        return _script("/* coremetrics: unknown client key */", status=404)
    served = tag_body(view.tag)
    _tag_version_keep(public_key, served.version, served.body)
    body = served.body
    if version and version != served.version:
        try:
            kept = store_get().tag_get(public_key, version)
        except Exception:
            logger.warning("table store unreachable; cannot look up tag %s", version)
            kept = None
        if kept is None:
            return _script("/* coremetrics: tag version retired; paste the new snippet */", 404)
        body = kept
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    if version:
        response["Cache-Control"] = "public, max-age=31536000, immutable"
    else:
        response["Cache-Control"] = "public, max-age=300, stale-while-revalidate=86400"
    response["ETag"] = f'"{version or served.version}"'
    # Subresource Integrity on another origin needs CORS; the tag holds nothing private.
    response["Access-Control-Allow-Origin"] = "*"
    return response


kept_tag_versions: set[tuple[str, str]] = set()


def _tag_version_keep(public_key: str, version: str, body: bytes) -> None:
    """Keep each tag version served (once per process) for pinned snippets (TAG_VERSION_DAYS)."""
    if (public_key, version) in kept_tag_versions:
        return
    try:
        store_get().tag_put(public_key, version, body)
    except Exception:
        logger.warning("table store unreachable; tag version %s not kept yet", version)
        return
    kept_tag_versions.add((public_key, version))


def _script(body: str, status: int) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response
