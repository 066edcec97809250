"""Click-through links (D1): every link in an answer goes through our redirect, which records
the click and sends the browser on to the address stored for that content, never elsewhere.

The link carries a token signed with the server's secret (django.core.signing, salted): who
clicked (client, visitor, session), what (campaign, content, table version) and where to (the
content's click-through address as the table holds it). A changed token fails its signature, so
the redirect can only ever go to an address one of our answers gave.
"""

from __future__ import annotations

from django.core import signing

SALT = "coremetrics.delivery.click"
# A link stays valid this long after the answer that gave it (pages stay open, tabs restore).
MAX_AGE_SECONDS = 30 * 24 * 3600


class ClickError(ValueError):
    pass


def click_token(
    *,
    client_key: str,
    visitor_id: str,
    session_id: str,
    campaign_key: str,
    content_id: int,
    version: int | None,
    target: str,
) -> str:
    return signing.dumps(
        {
            "k": client_key,
            "v": visitor_id,
            "s": session_id,
            "c": campaign_key,
            "n": content_id,
            "t": version,
            "u": target,
        },
        salt=SALT,
    )


def click_read(token: str) -> dict:
    """The click a token describes; raises ClickError when it was not made here, was changed
    or is too old."""
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise ClickError("this link has expired") from None
    except signing.BadSignature:
        raise ClickError("this is not a click-through link of this server") from None
    if not isinstance(data, dict) or not str(data.get("u", "")).startswith(("https://", "http://")):
        raise ClickError("this is not a click-through link of this server")
    return data
