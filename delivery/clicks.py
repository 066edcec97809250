"""Click-through links (D1): every link in an answer goes through our redirect, which records
the click and sends the browser on to the address stored for that content, never elsewhere.

A link is `/d/v1/click?t=<token>&v=<visitor>&s=<session>&m=<mac>`. The token is signed with
the server's secret (django.core.signing, salted) and names what was shown (client, campaign,
content, table version) and where it goes (the content's click-through address as the table
holds it). A changed token fails its signature, so the redirect can only ever go to an address
one of our answers gave. The token does not depend on the visitor, so a node signs it once a
day per content instead of on every answer (signing costs about 20 us, the hot path's budget);
the visitor and session travel beside it, bound to it by a short HMAC (about 1 us), so a click
is recorded only for the visitor and session the answer was for.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import cache, lru_cache

from django.conf import settings
from django.core import signing
from django.core.signals import setting_changed
from django.dispatch import receiver

from delivery.identity import SESSION_ID_RE, visitor_id_is_valid

SALT = "coremetrics.delivery.click"
# A link stays valid this long after the answer that gave it (pages stay open, tabs restore).
MAX_AGE_SECONDS = 30 * 24 * 3600
# A node re-signs a content's token after this long, so every link it gives out stays valid
# for at least MAX_AGE_SECONDS minus this.
TOKEN_REUSE_SECONDS = 24 * 3600
TOKENS_KEPT = 10_000


class ClickError(ValueError):
    pass


_tokens: dict[tuple, tuple[str, float]] = {}


def click_token(
    *, client_key: str, campaign_key: str, content_id: int, version: int | None, target: str
) -> str:
    """The signed token of one content's link, as this process last signed it (re-signed daily)."""
    ident = (client_key, campaign_key, content_id, version, target)
    now = time.monotonic()
    kept = _tokens.get(ident)
    if kept is not None and now - kept[1] < TOKEN_REUSE_SECONDS:
        return kept[0]
    token = signing.dumps(
        {"k": client_key, "c": campaign_key, "n": content_id, "t": version, "u": target},
        salt=SALT,
    )
    if len(_tokens) >= TOKENS_KEPT:
        _tokens.clear()
    _tokens[ident] = (token, now)
    return token


@lru_cache(maxsize=4)
def _mac_keyed(secret: str) -> hmac.HMAC:
    # Keyed once: a copy of it costs a fifth less per link than hmac.new with the key.
    key = hashlib.sha256(f"{SALT}.binding:{secret}".encode()).digest()
    return hmac.new(key, digestmod=hashlib.sha256)


@cache
def _link_mac() -> hmac.HMAC:
    # Read once: settings.SECRET_KEY costs a third of a microsecond per read.
    return _mac_keyed(settings.SECRET_KEY)


@receiver(setting_changed)
def _link_mac_forget(**kwargs: object) -> None:
    _link_mac.cache_clear()


def _binding(token: str, visitor_id: str, session_id: str, keyed: hmac.HMAC) -> str:
    mac = keyed.copy()
    mac.update(f"{token}|{visitor_id}|{session_id}".encode())
    return mac.hexdigest()[:20]


def click_link(base: str, *, token: str, visitor_id: str, session_id: str) -> str:
    # Visitor and session ids are URL-safe by construction (identity.py).
    mac = _binding(token, visitor_id, session_id, _link_mac())
    return f"{base}?t={token}&v={visitor_id}&s={session_id}&m={mac}"


def click_read(token: str, *, visitor_id: str, session_id: str, mac: str) -> dict:
    """The click a link describes; raises ClickError when it was not made here, was changed
    or is too old."""
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise ClickError("this link has expired") from None
    except signing.BadSignature:
        raise ClickError("this is not a click-through link of this server") from None
    if not isinstance(data, dict) or not str(data.get("u", "")).startswith(("https://", "http://")):
        raise ClickError("this is not a click-through link of this server")
    if not visitor_id_is_valid(visitor_id):
        raise ClickError("v is not a visitor id issued by this server")
    if not SESSION_ID_RE.fullmatch(session_id):
        raise ClickError("s is not a session id")
    secrets_known = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    if not any(
        hmac.compare_digest(mac, _binding(token, visitor_id, session_id, _mac_keyed(secret)))
        for secret in secrets_known
    ):
        raise ClickError("this link was changed: v and s are not the ones it was given with")
    return {**data, "v": visitor_id, "s": session_id}
