"""The addresses in email messages (C2): the open pixel, the link redirect and unsubscribe."""

from __future__ import annotations

import contextlib
import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from aggregation.services import email_activity_spool
from campaigns.mailtracking import TrackingError, landing_url, link_read, message_token_read
from campaigns.services.email_tracking import email_unsubscribe
from delivery.identity import client_address, ip_truncate

logger = logging.getLogger(__name__)

# The smallest transparent GIF (43 bytes).
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


def _record(request: HttpRequest, kind: str, ref, *, url: str = "", is_decoy: bool = False):
    try:
        email_activity_spool(
            client_id=ref.client_id,
            kind=kind,
            # Email activity is keyed by its message; a record still names a visitor.
            visitor_id=f"message-{ref.message_id}",
            message_id=ref.message_id,
            user_agent=request.headers.get("User-Agent", ""),
            ip=ip_truncate(client_address(request.META)),
            at=timezone.now(),
            url=url,
            is_decoy=is_decoy,
        )
    except OSError:
        logger.exception("could not spool an email %s", kind)


@require_GET
def email_open(request: HttpRequest, token: str) -> HttpResponse:
    """The open pixel: always a 1x1 image that no cache keeps; the open is spooled when the
    token is ours (no database on the way, so it answers even when the database is down)."""
    with contextlib.suppress(TrackingError):
        _record(request, "email_open", message_token_read(token))
    response = HttpResponse(PIXEL, content_type="image/gif")
    response["Cache-Control"] = "no-store, max-age=0"
    return response


@require_GET
def email_click(request: HttpRequest, token: str) -> HttpResponse:
    """A link of a message: recorded, then on to the address the message gave, never elsewhere."""
    url = request.GET.get("u", "")
    is_decoy = request.GET.get("d") == "1"
    try:
        ref = link_read(token, url, is_decoy, request.GET.get("h", ""))
    except TrackingError as error:
        return HttpResponse(f"{error}\n", status=400, content_type="text/plain; charset=utf-8")
    _record(request, "email_click", ref, url=url, is_decoy=is_decoy)
    if is_decoy:
        return HttpResponse(status=204)
    try:
        landing = landing_url(url, token)
    except ValueError:  # an address of the message that is no address ("http://[oops")
        return HttpResponse("this link is broken\n", status=400, content_type="text/plain")
    response = HttpResponseRedirect(landing)
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # RFC 8058: the mail provider POSTs without a form of ours; the token authenticates
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET asks (link scanners follow GETs); POST unsubscribes, from our button or a mail
    provider's one-click (List-Unsubscribe-Post)."""
    try:
        ref = message_token_read(token)
    except TrackingError as error:
        return render(request, "campaigns/unsubscribe.html", {"error": str(error)}, status=400)
    if request.method == "GET":
        return render(request, "campaigns/unsubscribe.html", {"token": token})
    try:
        message = email_unsubscribe(token=token)
    except TrackingError as error:
        return render(request, "campaigns/unsubscribe.html", {"error": str(error)}, status=404)
    except DatabaseError:
        logger.exception("could not unsubscribe message %s", ref.message_id)
        context = {"error": "We could not record this just now. Please try again in a minute."}
        return render(request, "campaigns/unsubscribe.html", context, status=503)
    return render(request, "campaigns/unsubscribe.html", {"done": True, "email": message.email})
