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

import orjson
from django.conf import settings
from django.utils import timezone

from aggregation.services import deliveries_spool
from delivery.answers import placements_answer
from delivery.clicks import click_link, click_token
from delivery.identity import (
    ip_truncate,
    session_id_issue,
    session_is_current,
    visitor_id_is_valid,
)
from delivery.selectors import QueryError, client_view_get
from delivery.tables import ClientView

logger = logging.getLogger(__name__)

QUERY_PATH = "/d/v1/query"
CLICK_PATH = "/d/v1/click"
PLACEMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,60}")
MAX_PLACEMENTS = 20
MAX_URL = 2000


@dataclass(frozen=True)
class QueryRequest:
    params: Mapping[str, str]
    origin: str | None
    # Global Privacy Control (the Sec-GPC header): nothing is issued or recorded.
    is_private: bool
    remote_addr: str
    # This server as the browser reaches it (scheme and host), for click-through links.
    base_url: str


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def query_reply(request: QueryRequest) -> Reply:
    """The answer to one query, with everything it answered spooled for aggregation.

    With a=1 (no consent, or Global Privacy Control) the answer is each campaign's default,
    for no visitor, and nothing is recorded.
    """
    params = request.params
    try:
        view = client_view_get(key=params.get("k", ""))
        keys = _placement_keys(params)
        if params.get("a") == "1" or request.is_private:
            answers = placements_answer(view, visitor_id="", placement_keys=keys)
            data = {"client": view.public_key, "visitor": None, "session": None}
            return _answer(request, view, {**data, "placements": answers})
        visitor_id = params.get("v", "")
        if not visitor_id:
            raise QueryError(400, "v (the visitor id) is required; get one from /d/v1/visitor")
        if not visitor_id_is_valid(visitor_id):
            raise QueryError(400, "v is not a visitor id issued by this server")
        idle_seconds = _idle_seconds(params)
        url, referrer = _text_param(params, "u"), _text_param(params, "r")
    except QueryError as error:
        return error_reply(error)
    now = time.time()
    session_id = params.get("s", "")
    if not session_is_current(session_id, idle_seconds=idle_seconds, now=now):
        session_id = session_id_issue(
            client_key=view.public_key,
            visitor_id=visitor_id,
            ip=ip_truncate(request.remote_addr),
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
    links = _click_links(
        f"{request.base_url}{CLICK_PATH}",
        view,
        answers,
        visitor_id=visitor_id,
        session_id=session_id,
    )
    return _answer(request, view, {**data, "placements": links})


def error_reply(error: QueryError) -> Reply:
    # Errors carry nothing private; any page may read why its request failed.
    headers = [
        ("Content-Type", "application/json"),
        ("Access-Control-Allow-Origin", "*"),
        ("Cache-Control", "no-store"),
    ]
    return Reply(error.status, headers, orjson.dumps({"error": str(error)}))


def _answer(request: QueryRequest, view: ClientView, data: dict) -> Reply:
    headers = [
        ("Content-Type", "application/json"),
        ("Vary", "Origin"),
        ("Cache-Control", "no-store"),
        ("X-Coremetrics-Node", settings.NODE_NAME),
    ]
    if request.origin and request.origin in view.origins:
        headers.append(("Access-Control-Allow-Origin", request.origin))
    return Reply(200, headers, orjson.dumps(data))


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


def _placement_keys(params: Mapping[str, str]) -> list[str]:
    keys = [key for key in params.get("p", "").split(",") if key]
    if len(keys) > MAX_PLACEMENTS:
        raise QueryError(400, f"p names more than {MAX_PLACEMENTS} placements")
    if any(not PLACEMENT_RE.fullmatch(key) for key in keys):
        raise QueryError(400, "p must be placement keys (letters, digits, - and _)")
    return list(dict.fromkeys(keys))


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
