"""Tracking in email (C2, B3): signed addresses for the open pixel, the links and unsubscribe,
and the rules that tell a person's opens and clicks from a machine's. No ORM.

A message's token names its client and its id, signed with the server's secret
(django.core.signing, salted): the pixel and the redirect record from it without asking the
database. A link is `/e/c/<token>?u=<address>&h=<signature>`, the
signature covering the token and the address, so the redirect only ever goes to an address
that was in the message. The landing address gets `cm_em=<token>`: the tag's page view
carries it back, and consolidation joins that browser's visitor to the recipient (B5).
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from django.core import signing

SALT = "coremetrics.email"
LINK_SALT = "coremetrics.email.link"
LANDING_PARAMETER = "cm_em"


class TrackingError(ValueError):
    pass


@dataclass(frozen=True)
class MessageRef:
    client_id: int
    message_id: int


def message_token(ref: MessageRef) -> str:
    # The recipient's visitor id stays out: links are forwarded and landing addresses land in
    # analytics tools, and a visitor id is the key to that visitor's profile.
    return signing.Signer(salt=SALT).sign(f"{ref.client_id}.{ref.message_id}")


def message_token_read(token: str) -> MessageRef:
    """The message a token names; raises TrackingError when it was not made here."""
    try:
        value = signing.Signer(salt=SALT).unsign(token)
        client_id, message_id = value.split(".")
        return MessageRef(int(client_id), int(message_id))
    except (signing.BadSignature, ValueError):
        raise TrackingError("this is not an email link of this server") from None


def _link_value(token: str, url: str, is_decoy: bool) -> str:
    return f"{token}|{int(is_decoy)}|{url}"


def link_read(token: str, url: str, is_decoy: bool, signature: str) -> MessageRef:
    """The message of a tracked link whose address is the one it was given with."""
    ref = message_token_read(token)
    signer = signing.Signer(salt=LINK_SALT)  # checks SECRET_KEY_FALLBACKS too
    try:
        signer.unsign(f"{_link_value(token, url, is_decoy)}{signer.sep}{signature}")
    except signing.BadSignature:
        raise TrackingError(
            "this link was changed: it does not go where the message said"
        ) from None
    return ref


@dataclass(frozen=True)
class Addresses:
    """The tracking addresses of one message."""

    base: str
    token: str

    @property
    def open(self) -> str:
        return f"{self.base}/e/o/{self.token}.gif"

    @property
    def unsubscribe(self) -> str:
        return f"{self.base}/e/u/{self.token}"

    def link(self, url: str, *, is_decoy: bool = False) -> str:
        signature = signing.Signer(salt=LINK_SALT).signature(_link_value(self.token, url, is_decoy))
        query = {"u": url, "h": signature}
        if is_decoy:
            query["d"] = "1"
        return f"{self.base}/e/c/{self.token}?{urlencode(query, quote_via=quote)}"


def landing_url(url: str, token: str) -> str:
    """Where a click lands: the message's address with the token the tag sends back."""
    parts = urlsplit(url)
    query = [pair for pair in parse_qsl(parts.query, keep_blank_values=True)]
    query = [(name, value) for name, value in query if name != LANDING_PARAMETER]
    query.append((LANDING_PARAMETER, token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def landing_token(url: str) -> str:
    """The message token of a landing page's address, or ''."""
    try:
        for name, value in parse_qsl(urlsplit(url).query):
            if name == LANDING_PARAMETER:
                return value
    except ValueError:
        pass
    return ""


# <a ... href="http(s)://..."> in rendered HTML (attribute values are HTML-escaped there).
HTML_LINK_RE = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s]+)\2""", re.I)
# A bare address in text, without the punctuation that ends a sentence after it.
TEXT_LINK_RE = re.compile(r"""https?://[^\s<>"']*[^\s<>"'.,;:!?)\]]""")
# Invisible to a person, followed by scanners that fetch every link of a message.
DECOY_HTML = (
    '<a href="{href}" style="display:none;font-size:0;color:transparent" aria-hidden="true" '
    'tabindex="-1">&#8203;</a>'
)


def html_links_track(body: str, track: Callable[[str], str]) -> str:
    def replace(match: re.Match) -> str:
        url = html.unescape(match.group(3))
        return f"{match.group(1)}{match.group(2)}{html.escape(track(url))}{match.group(2)}"

    return HTML_LINK_RE.sub(replace, body)


def text_links_track(body: str, track: Callable[[str], str]) -> str:
    return TEXT_LINK_RE.sub(lambda match: track(match.group(0)), body)


# Machines (B3). A rule names why; docs/email.md has the list and its sources.
MACHINE_AGENTS = (
    "bot",
    "crawler",
    "spider",
    "preview",
    "python",
    "curl",
    "wget",
    "go-http-client",
    "java/",
    "okhttp",
    "headlesschrome",
    "barracuda",
    "mimecast",
    "proofpoint",
    "ppops",
    "symantec",
    "trendmicro",
    "forcepoint",
    "safelinks",
)
# Gmail and Yahoo fetch images through their proxies when the person opens the message.
PERSON_PROXIES = ("googleimageproxy", "yahoomailproxy")


@dataclass(frozen=True)
class Activity:
    kind: str  # "open" or "click"
    at: datetime
    user_agent: str
    ip: str
    is_decoy: bool = False
    url: str = ""


@lru_cache(maxsize=4)
def _networks(spec: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(network, strict=False) for network in spec)


def _in_networks(ip: str, networks: tuple) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def activities_classify(
    activities: Iterable[Activity],
    *,
    sent_at: datetime | None,
    machine_networks: Iterable[str],
    soon_seconds: float,
    burst_seconds: float,
) -> list[tuple[Activity, str]]:
    """Each activity of one message, in time order, with why a machine did it, or '' when
    a person did. The rules, first match wins:
    - a click on the decoy link, and any click within `burst_seconds` of one;
    - a user agent of a scanner or a prefetching proxy, or none at all, or Apple Mail
      Privacy Protection's bare "Mozilla/5.0";
    - an address in `machine_networks` (mail providers' and security vendors' fetchers);
    - within `soon_seconds` of the sending (a person has not read it yet);
    - a click within `burst_seconds` of a click on another link of the message, before or
      after it (a scanner follows every link at once)."""
    networks = _networks(tuple(machine_networks))
    ordered = sorted(activities, key=lambda activity: activity.at)
    decoys = [activity.at for activity in ordered if activity.is_decoy]
    clicks = [activity for activity in ordered if activity.kind == "click"]
    burst = timedelta(seconds=burst_seconds)
    reasons = []
    for activity in ordered:
        agent = activity.user_agent.strip().lower()
        reason = ""
        if activity.kind == "click" and any(abs(activity.at - at) <= burst for at in decoys):
            reason = "decoy link"
        elif not agent or agent == "mozilla/5.0":
            reason = "prefetching proxy" if agent else "no user agent"
        elif any(name in agent for name in PERSON_PROXIES):
            reason = ""
        elif any(name in agent for name in MACHINE_AGENTS):
            reason = "scanner user agent"
        if not reason and _in_networks(activity.ip, networks):
            reason = "machine network"
        if (
            not reason
            and sent_at is not None
            and (activity.at - sent_at).total_seconds() < soon_seconds
        ):
            reason = "too soon after sending"
        if (
            not reason
            and activity.kind == "click"
            and any(
                other.url != activity.url and abs(other.at - activity.at) <= burst
                for other in clicks
            )
        ):
            reason = "burst of clicks"
        reasons.append(reason)
    return list(zip(ordered, reasons, strict=True))
