"""Visitor and session ids (D5).

A visitor id is 120 random bits plus a MAC under the server's secret, so delivery can tell an
id it issued from a made-up one without a database lookup, and ids cannot be enumerated.
A session id carries its start time (to end it after SESSION_MAX_HOURS) and a hash of the
client, visitor, truncated IP and that time, as the patent builds it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare, salted_hmac

VISITOR_ID_RE = re.compile(r"[A-Za-z0-9_-]{20}\.[0-9a-f]{10}")
SESSION_ID_RE = re.compile(r"[0-9a-f]{8,12}\.[0-9a-f]{12}")


def _visitor_mac(token: str, secret: str | None = None) -> str:
    return salted_hmac("coremetrics.visitor", token, secret=secret).hexdigest()[:10]


# Ids this process has checked lately: most queries come from a visitor seen a moment ago, and
# a hit skips the HMAC (about 4 us of the query's budget). Only valid ids are kept, so made-up
# ids cannot fill it with anything but their own misses.
_valid_ids: dict[str, bool] = {}
VALID_IDS_KEPT = 100_000


def visitor_id_issue() -> str:
    token = secrets.token_urlsafe(15)
    return f"{token}.{_visitor_mac(token)}"


def visitor_id_is_valid(visitor_id: str) -> bool:
    if visitor_id in _valid_ids:
        return True
    if not VISITOR_ID_RE.fullmatch(visitor_id):
        return False
    token, mac = visitor_id.split(".")
    # Ids issued under a retired key stay valid while it is listed in SECRET_KEY_FALLBACKS.
    secrets_known = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    if not any(constant_time_compare(mac, _visitor_mac(token, secret)) for secret in secrets_known):
        return False
    if len(_valid_ids) >= VALID_IDS_KEPT:
        _valid_ids.clear()
    _valid_ids[visitor_id] = True
    return True


def client_address(meta: Mapping[str, Any], *, is_proxy_trusted: bool | None = None) -> str:
    """The browser's address: behind a trusted proxy (TRUST_X_FORWARDED_FOR) the one it put
    last in X-Forwarded-For, else the connection's. Earlier entries are the browser's word.

    is_proxy_trusted: TRUST_X_FORWARDED_FOR as the caller already read it (the lean handler
    reads its settings once, not on every query)."""
    if is_proxy_trusted is None:
        is_proxy_trusted = settings.TRUST_X_FORWARDED_FOR
    if is_proxy_trusted:
        forwarded = meta.get("HTTP_X_FORWARDED_FOR")
        if forwarded:
            return forwarded.rsplit(",", 1)[-1].strip()
    return meta.get("REMOTE_ADDR", "")


def request_client_address(request: HttpRequest) -> str:
    """client_address for a Django request (the login lockout counts failures by it)."""
    return client_address(request.META)


@lru_cache(maxsize=65_536)
def ip_truncate(ip: str) -> str:
    """Keep the network, drop the host: /24 for IPv4, /48 for IPv6; '' when not an address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def session_id_issue(*, client_key: str, visitor_id: str, ip: str, now: float) -> str:
    started = int(now)
    digest = hashlib.sha256(f"{client_key}|{visitor_id}|{ip}|{now}".encode()).hexdigest()
    return f"{started:x}.{digest[:12]}"


def session_is_current(session_id: str, *, idle_seconds: float | None, now: float) -> bool:
    """True while the session is younger than SESSION_MAX_HOURS and not idle too long."""
    if not SESSION_ID_RE.fullmatch(session_id):
        return False
    started = int(session_id.split(".")[0], 16)
    if not 0 <= now - started < settings.SESSION_MAX_HOURS * 3600:
        return False
    return idle_seconds is None or idle_seconds < settings.SESSION_IDLE_MINUTES * 60
