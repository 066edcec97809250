"""The collect endpoint the tag sends its batches to (A1)."""

from __future__ import annotations

import json
import logging
import math
import time
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from aggregation.ratelimit import RateLimiter
from aggregation.services import batch_collect, batch_errors
from delivery.selectors import QueryError, client_view_get

logger = logging.getLogger(__name__)


def _reply(request: HttpRequest, status: int, data: dict) -> JsonResponse:
    response = JsonResponse(data, status=status)
    # The tag posts text/plain (no preflight); reading the reply is harmless for any origin.
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
@require_http_methods(["POST"])
def collect(request: HttpRequest) -> HttpResponse:
    """Accept a batch of tracked events; 202 once spooled, 4xx saying why, 503 if not stored."""
    limit = settings.COLLECT_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _reply(request, 413, {"error": f"body is larger than {limit} bytes"})
    try:
        view = client_view_get(key=request.GET.get("k", ""))
    except QueryError as error:
        return _reply(request, error.status, {"error": str(error)})
    if request.headers.get("Sec-GPC") == "1":
        return _reply(request, 403, {"error": "Global Privacy Control is on: nothing is recorded"})
    body = request.read(limit + 1)
    if len(body) > limit:
        return _reply(request, 413, {"error": f"body is larger than {limit} bytes"})
    try:
        batch = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _reply(request, 400, {"error": "body is not JSON"})
    errors = batch_errors(batch)
    if errors:
        return _reply(request, 400, {"error": "invalid batch", "errors": errors})
    wait = _limiter().take(view.client_id, len(batch["events"]), now=time.monotonic())
    if wait:
        response = _reply(request, 429, {"error": "too many events for this client; retry later"})
        response["Retry-After"] = str(math.ceil(wait))
        return response
    try:
        result = batch_collect(client_id=view.client_id, batch=batch, received_at=timezone.now())
    except OSError:
        logger.exception("could not spool a batch")
        return _reply(request, 503, {"error": "cannot store events now; retry later"})
    if not result.accepted:
        return _reply(request, 400, {"error": "invalid events", "rejected": result.rejected})
    return _reply(request, 202, {"accepted": result.accepted, "rejected": result.rejected})


@cache
def _limiter() -> RateLimiter:
    rate = settings.COLLECT_RATE_PER_SECOND
    return RateLimiter(rate=rate, burst=rate * settings.COLLECT_RATE_BURST_SECONDS)


def _refuse_constant(name: str) -> float:
    # NaN and Infinity are not JSON, though Python's parser takes them by default.
    raise ValueError(f"{name} is not JSON")
