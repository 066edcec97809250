"""Delivery's HTTP interface: the query, visitor ids and the served tag (D1, D5, T1)."""

from __future__ import annotations

import logging
import re
import time

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from aggregation.services import click_spool, deliveries_spool
from delivery.answers import placements_answer
from delivery.clicks import ClickError, click_read, click_token
from delivery.identity import (
    ip_truncate,
    session_id_issue,
    session_is_current,
    visitor_id_is_valid,
    visitor_id_issue,
)
from delivery.selectors import QueryError, client_view_get
from delivery.tables import ClientView, local_tables, store_get
from delivery.tag import tag_body

logger = logging.getLogger(__name__)

PLACEMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,60}")
MAX_PLACEMENTS = 20
MAX_URL = 2000


def _error(error: QueryError) -> JsonResponse:
    response = JsonResponse({"error": str(error)}, status=error.status)
    # Errors carry nothing private; any page may read why its request failed.
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "no-store"
    return response


def _answer(request: HttpRequest, view: ClientView, data: dict) -> JsonResponse:
    response = JsonResponse(data)
    origin = request.headers.get("Origin")
    if origin and origin in view.origins:
        response["Access-Control-Allow-Origin"] = origin
    response["Vary"] = "Origin"
    response["Cache-Control"] = "no-store"
    return response


def _text_param(request: HttpRequest, name: str) -> str:
    value = request.GET.get(name, "")
    if len(value) > MAX_URL:
        raise QueryError(400, f"{name} is longer than {MAX_URL} characters")
    return value


def _privacy_signal(request: HttpRequest) -> bool:
    """Global Privacy Control (the Sec-GPC header): nothing is issued or recorded."""
    return request.headers.get("Sec-GPC") == "1"


def _placement_keys(request: HttpRequest) -> list[str]:
    keys = [key for key in request.GET.get("p", "").split(",") if key]
    if len(keys) > MAX_PLACEMENTS:
        raise QueryError(400, f"p names more than {MAX_PLACEMENTS} placements")
    if any(not PLACEMENT_RE.fullmatch(key) for key in keys):
        raise QueryError(400, "p must be placement keys (letters, digits, - and _)")
    return list(dict.fromkeys(keys))


@require_GET
def query(request: HttpRequest) -> HttpResponse:
    """Which content this visitor sees in each placement asked for; records every answer.

    With a=1 (no consent, or Global Privacy Control) the answer is each campaign's default,
    for no visitor, and nothing is recorded.
    """
    try:
        view = client_view_get(key=request.GET.get("k", ""))
        keys = _placement_keys(request)
        if request.GET.get("a") == "1" or _privacy_signal(request):
            answers = placements_answer(view, visitor_id="", placement_keys=keys)
            data = {"client": view.public_key, "visitor": None, "session": None}
            return _answer(request, view, {**data, "placements": answers})
        visitor_id = request.GET.get("v", "")
        if not visitor_id:
            raise QueryError(400, "v (the visitor id) is required; get one from /d/v1/visitor")
        if not visitor_id_is_valid(visitor_id):
            raise QueryError(400, "v is not a visitor id issued by this server")
        idle = request.GET.get("i")
        try:
            idle_seconds = None if idle is None else float(idle)
        except ValueError:
            raise QueryError(400, "i (seconds idle) must be a number") from None
        if idle_seconds is not None and not 0 <= idle_seconds < 10**9:
            raise QueryError(400, "i (seconds idle) must be a number") from None
        url, referrer = _text_param(request, "u"), _text_param(request, "r")
    except QueryError as error:
        return _error(error)
    now = time.time()
    session_id = request.GET.get("s", "")
    if not session_is_current(session_id, idle_seconds=idle_seconds, now=now):
        session_id = session_id_issue(
            client_key=view.public_key,
            visitor_id=visitor_id,
            ip=ip_truncate(request.META.get("REMOTE_ADDR", "")),
            now=now,
        )
    answers = placements_answer(view, visitor_id=visitor_id, placement_keys=keys)
    try:
        deliveries_spool(
            client_id=view.client_id,
            visitor_id=visitor_id,
            session_id=session_id,
            answers=[answer for answer in answers if answer["campaign"] is not None],
            url=url,
            referrer=referrer,
            at=timezone.now(),
        )
    except OSError:
        # The visitor still gets an answer; the lost records are counted in the log.
        logger.exception("could not spool %d delivery records", len(answers))
    data = {"client": view.public_key, "visitor": visitor_id, "session": session_id}
    links = _click_links(request, view, answers, visitor_id=visitor_id, session_id=session_id)
    return _answer(request, view, {**data, "placements": links})


def _click_links(
    request: HttpRequest, view: ClientView, answers: list[dict], *, visitor_id: str, session_id: str
) -> list[dict]:
    """The answers with each click-through address replaced by our recording redirect (the
    table's content stays as it is: the answer gets a copy)."""
    base = None
    linked = []
    for answer in answers:
        content = answer["content"]
        if content and content.get("click_url") and answer["campaign"] is not None:
            base = base or request.build_absolute_uri(reverse("delivery:click"))
            token = click_token(
                client_key=view.public_key,
                visitor_id=visitor_id,
                session_id=session_id,
                campaign_key=answer["campaign"],
                content_id=content["id"],
                version=answer["version"],
                target=content["click_url"],
            )
            answer = {**answer, "content": {**content, "click_url": f"{base}?t={token}"}}
        linked.append(answer)
    return linked


@require_GET
def click(request: HttpRequest) -> HttpResponse:
    """Record a click-through and send the browser to the content's stored address (D1)."""
    try:
        data = click_read(request.GET.get("t", ""))
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
        return _error(error)
    visitor_id = visitor_id_issue()
    session_id = session_id_issue(
        client_key=view.public_key,
        visitor_id=visitor_id,
        ip=ip_truncate(request.META.get("REMOTE_ADDR", "")),
        now=time.time(),
    )
    return _answer(request, view, {"visitor": visitor_id, "session": session_id})


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
