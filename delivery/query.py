"""The delivery query (D1, D4): which content this visitor sees in each placement asked for.

One function serves both ways in: the lean WSGI handler in front of Django (delivery/handler.py,
what production runs) and the Django view (delivery/views.py, what the test client reaches), so
the two give the same answer byte for byte. It reads only this node's memory and appends one
line to the local spool: no database, no network.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from html import escape
from zoneinfo import ZoneInfo

import orjson
from django.conf import settings
from django.utils.encoding import iri_to_uri

from aggregation.services import deliveries_spool
from delivery.answers import placements_answer
from delivery.capping import view_counter
from delivery.clicks import click_link, click_token
from delivery.criteria import RequestFacts
from delivery.identity import (
    ip_truncate,
    session_id_issue,
    session_is_current,
    visitor_id_is_valid,
)
from delivery.selectors import QueryError, client_view_get
from delivery.tables import ClientView, PlacementView

logger = logging.getLogger(__name__)

QUERY_PATH = "/d/v1/query"
FRAGMENT_PATH = "/d/v1/content"
IMAGE_PATH = "/d/v1/image"
CLICK_PATH = "/d/v1/click"
PLACEMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,60}")
MAX_PLACEMENTS = 20
MAX_URL = 2000


@dataclass(slots=True)
class QueryRequest:
    params: Mapping[str, str]
    origin: str | None
    # Global Privacy Control (the Sec-GPC header): nothing is issued or recorded.
    is_private: bool
    remote_addr: str
    user_agent: str
    # This server as the browser reaches it (scheme and host), for click-through links.
    base_url: str


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(slots=True)
class Answered:
    view: ClientView
    # None for an anonymous answer: no visitor, nothing recorded.
    visitor_id: str | None
    session_id: str | None
    answers: list[dict]


def query_answered(request: QueryRequest, *, is_visitor_required: bool = True) -> Answered:
    """The answers for the placements asked, each click-through address turned into our
    recording redirect, and every answer spooled (D4); raises QueryError for a bad query.

    With a=1 (no consent, or Global Privacy Control), or without a visitor where none is
    required, the answer is each campaign's default, for no visitor, and nothing is recorded.
    """
    params = request.params
    view = client_view_get(key=params.get("k", ""))
    keys = _placement_keys(params)
    visitor_id = params.get("v", "")
    is_anonymous = params.get("a") == "1" or request.is_private
    if not visitor_id and not is_visitor_required:
        is_anonymous = True
    if is_anonymous:
        answers = placements_answer(view, visitor_id="", placement_keys=keys)
        return Answered(view=view, visitor_id=None, session_id=None, answers=answers)
    if not visitor_id:
        raise QueryError(400, "v (the visitor id) is required; get one from /d/v1/visitor")
    if not visitor_id_is_valid(visitor_id):
        raise QueryError(400, "v is not a visitor id issued by this server")
    idle_seconds = _idle_seconds(params)
    url, referrer = _text_param(params, "u"), _text_param(params, "r")
    now = time.time()
    session_id = params.get("s", "")
    # A page's first query has no session yet: nothing to check.
    if not session_id or not session_is_current(session_id, idle_seconds=idle_seconds, now=now):
        session_id = session_id_issue(
            client_key=view.public_key,
            visitor_id=visitor_id,
            ip=ip_truncate(request.remote_addr),
            now=now,
        )
    answers = placements_answer(
        view,
        visitor_id=visitor_id,
        placement_keys=keys,
        facts=lambda: RequestFacts(
            user_agent=request.user_agent,
            ip=request.remote_addr,
            url=url,
            referrer=referrer,
            now=now,
        ),
        cap_take=lambda placement: _cap_take(
            placement, view=view, visitor_id=visitor_id, session_id=session_id, now=now
        ),
    )
    try:
        deliveries_spool(
            client_id=view.client_id,
            visitor_id=visitor_id,
            session_id=session_id,
            answers=[answer for answer in answers if answer["campaign"] is not None],
            url=url,
            referrer=referrer,
            at=datetime.fromtimestamp(now, UTC),
        )
    except OSError:
        # The visitor still gets an answer; the lost records are counted in the log.
        logger.exception("could not spool %d delivery records", len(answers))
    links = _click_links(
        f"{request.base_url}{CLICK_PATH}",
        view,
        answers,
        visitor_id=visitor_id,
        session_id=session_id,
    )
    return Answered(view=view, visitor_id=visitor_id, session_id=session_id, answers=links)


def query_reply(request: QueryRequest) -> Reply:
    """The JSON answer the tag asks for: every placement of a page in one request."""
    try:
        answered = query_answered(request)
    except QueryError as error:
        return error_reply(error)
    data = {
        "client": answered.view.public_key,
        "visitor": answered.visitor_id,
        "session": answered.session_id,
        "placements": answered.answers,
    }
    headers = answer_headers(request.origin, answered.view, "application/json")
    return Reply(200, headers, orjson.dumps(data))


def fragment_reply(request: QueryRequest) -> Reply:
    """The content itself as an HTML fragment (the patent's push form), for one placement."""
    try:
        answer = _single(request)
    except QueryError as error:
        return error_reply(error)
    body = content_fragment(answer.answers[0]["content"])
    headers = answer_headers(request.origin, answer.view, "text/html; charset=utf-8")
    # A client's own HTML, served from our host: opened as a page or framed, it runs in an
    # opaque origin, never with this site's cookies (the console lives here too).
    headers.append(("Content-Security-Policy", FRAGMENT_POLICY))
    return Reply(200, headers, body.encode())


FRAGMENT_POLICY = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox"
# A transparent 1x1 GIF: the image form's answer when the placement shows no image.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


def image_reply(request: QueryRequest) -> Reply:
    """The no-JavaScript form (`<img>`, `<noscript>`, email): a redirect to the image the
    visitor gets, recorded like any answer; a transparent pixel when it is not an image."""
    try:
        answer = _single(request)
    except QueryError as error:
        return error_reply(error)
    content = answer.answers[0]["content"]
    if content is not None and content["type"] == "image" and content["url"]:
        location = iri_to_uri(content["url"])
        return Reply(302, [("Location", location), ("Cache-Control", "no-store")], b"")
    return Reply(200, [("Content-Type", "image/gif"), ("Cache-Control", "no-store")], PIXEL)


def _single(request: QueryRequest) -> Answered:
    if len(_placement_keys(request.params)) != 1:
        raise QueryError(400, "p must name exactly one placement")
    answered = query_answered(request, is_visitor_required=False)
    if answered.answers[0]["campaign"] is None:
        raise QueryError(404, "no active campaign has this placement")
    return answered


def content_fragment(content: dict | None) -> str:
    """The HTML that shows a content; every address is escaped, HTML content is the client's
    own fragment as stored."""
    if content is None:
        return ""
    kind, url = content["type"], escape(content["url"])
    if kind == "html":
        return content["html"]
    if kind == "script":
        return f'<script src="{url}" async></script>'
    if kind == "video":
        element = f'<video src="{url}" controls playsinline></video>'
    elif kind == "audio":
        element = f'<audio src="{url}" controls></audio>'
    else:
        element = f'<img src="{url}" alt="{escape(content["alt"])}">'
    if content.get("click_url") and kind == "image":
        return f'<a href="{escape(content["click_url"])}">{element}</a>'
    return element


def _cap_take(
    placement: PlacementView, *, view: ClientView, visitor_id: str, session_id: str, now: float
) -> bool:
    """Count a view of a capped campaign's content for the visitor's day or session."""
    if placement.cap_period == "session":
        period = session_id
        ends_at = int(session_id.split(".")[0], 16) + settings.SESSION_MAX_HOURS * 3600
    else:
        local = datetime.fromtimestamp(now, ZoneInfo(view.time_zone))
        period = local.date().isoformat()
        ends_at = int(
            datetime.combine(local.date() + timedelta(days=1), dtime(), local.tzinfo).timestamp()
        )
    return view_counter(settings.DELIVERY_NODE_DIR / "views.bin").take(
        campaign_id=placement.campaign_id,
        visitor_id=visitor_id,
        period=period,
        ends_at=ends_at,
        now=int(now),
        limit=placement.cap_views or 0,
    )


def error_reply(error: QueryError) -> Reply:
    # Errors carry nothing private; any page may read why its request failed.
    headers = [
        ("Content-Type", "application/json"),
        ("Access-Control-Allow-Origin", "*"),
        ("Cache-Control", "no-store"),
    ]
    return Reply(error.status, headers, orjson.dumps({"error": str(error)}))


def answer_headers(
    origin: str | None, view: ClientView, content_type: str
) -> list[tuple[str, str]]:
    """An answer's headers: never cached, readable by the client's own sites only."""
    headers = [
        ("Content-Type", content_type),
        ("Vary", "Origin"),
        ("Cache-Control", "no-store"),
    ]
    if origin and origin in view.origins:
        headers.append(("Access-Control-Allow-Origin", origin))
    return headers


def _idle_seconds(params: Mapping[str, str]) -> float | None:
    idle = params.get("i")
    if idle is None:
        return None
    try:
        seconds = float(idle)
    except ValueError:
        raise QueryError(400, "i (seconds idle) must be a number") from None
    if not 0 <= seconds < 10**9:
        raise QueryError(400, "i (seconds idle) must be a number")
    return seconds


def _text_param(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if len(value) > MAX_URL:
        raise QueryError(400, f"{name} is longer than {MAX_URL} characters")
    return value


# The placement lists checked lately, each as a tuple of its keys: a site's pages ask with a
# handful of lists over and over. Only valid lists are kept, and at most this many.
_placement_lists: dict[str, tuple[str, ...]] = {}
PLACEMENT_LISTS_KEPT = 10_000


def _placement_keys(params: Mapping[str, str]) -> tuple[str, ...]:
    raw = params.get("p", "")
    keys = _placement_lists.get(raw)
    if keys is None:
        keys = _placement_keys_parse(raw)
        if len(_placement_lists) >= PLACEMENT_LISTS_KEPT:
            _placement_lists.clear()
        _placement_lists[raw] = keys
    return keys


def _placement_keys_parse(raw: str) -> tuple[str, ...]:
    keys = [key for key in raw.split(",") if key]
    if len(keys) > MAX_PLACEMENTS:
        raise QueryError(400, f"p names more than {MAX_PLACEMENTS} placements")
    if any(not PLACEMENT_RE.fullmatch(key) for key in keys):
        raise QueryError(400, "p must be placement keys (letters, digits, - and _)")
    return tuple(dict.fromkeys(keys))


def _click_links(
    base: str, view: ClientView, answers: list[dict], *, visitor_id: str, session_id: str
) -> list[dict]:
    """The answers with each click-through address replaced by our recording redirect (the
    table's content stays as it is: the answer gets a copy)."""
    linked = []
    for answer in answers:
        content = answer["content"]
        if content and content.get("click_url") and answer["campaign"] is not None:
            token = click_token(
                client_key=view.public_key,
                campaign_key=answer["campaign"],
                content_id=content["id"],
                version=answer["version"],
                target=content["click_url"],
            )
            link = click_link(base, token=token, visitor_id=visitor_id, session_id=session_id)
            answer = {**answer, "content": {**content, "click_url": link}}
        linked.append(answer)
    return linked
