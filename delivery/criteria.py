"""Request-time criteria (D3): conditions an attachment may add to its segment, decided per
request in memory from what the request itself says.

    conditions := {"devices": ["mobile" | "tablet" | "desktop" | "bot", ...],
                   "countries": ["DE", ...],            # ISO 3166 codes; needs GEOIP_PATH
                   "hours": {"from": 0-23, "to": 1-24},  # client's time zone; from > to wraps
                   "weekdays": [0-6, ...],              # Monday is 0, client's time zone
                   "page_contains": "text",             # in the page address, any case
                   "referrer_contains": "text"}         # in the referrer, any case

Every condition given must hold. The device type comes from the user agent (ua-parser, whose
rules are maintained upstream), the country from a MaxMind-format database file when
GEOIP_PATH names one (without it, a country condition never holds). Both are cached per
distinct user agent and address: parsing a user agent costs about 0.6 ms the first time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings

logger = logging.getLogger(__name__)

DEVICE_TYPES = ("mobile", "tablet", "desktop", "bot")
CONDITION_KEYS = ("devices", "countries", "hours", "weekdays", "page_contains", "referrer_contains")
MAX_TEXT = 200
MAX_USER_AGENT = 512
MOBILE_SYSTEMS = {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS"}


def conditions_check(conditions: Any) -> list[str]:
    """Every problem of a conditions object, each naming its key; [] when it is valid."""
    if not isinstance(conditions, dict):
        return ["conditions must be an object"]
    errors = [f"{key}: not a condition" for key in conditions if key not in CONDITION_KEYS]
    devices = conditions.get("devices")
    if devices is not None and (
        not isinstance(devices, list) or not devices or not set(devices) <= set(DEVICE_TYPES)
    ):
        errors.append(f"devices: a non-empty list of {', '.join(DEVICE_TYPES)}")
    countries = conditions.get("countries")
    if countries is not None and (
        not isinstance(countries, list)
        or not countries
        or not all(isinstance(c, str) and len(c) == 2 and c.isalpha() and c.isupper()
                   for c in countries)
    ):  # fmt: skip
        errors.append("countries: a non-empty list of two-letter country codes (DE, FR)")
    hours = conditions.get("hours")
    if hours is not None and not (
        isinstance(hours, dict)
        and set(hours) == {"from", "to"}
        and all(type(hours[k]) is int for k in ("from", "to"))
        and 0 <= hours["from"] <= 23
        and 1 <= hours["to"] <= 24
        and hours["from"] != hours["to"]
    ):
        errors.append('hours: {"from": 0-23, "to": 1-24}, two different hours')
    weekdays = conditions.get("weekdays")
    if weekdays is not None and (
        not isinstance(weekdays, list)
        or not weekdays
        or not all(type(day) is int and 0 <= day <= 6 for day in weekdays)
    ):
        errors.append("weekdays: a non-empty list of days, 0 (Monday) to 6 (Sunday)")
    for key in ("page_contains", "referrer_contains"):
        text = conditions.get(key)
        if text is not None and not (isinstance(text, str) and 0 < len(text) <= MAX_TEXT):
            errors.append(f"{key}: text of 1 to {MAX_TEXT} characters")
    return errors


@dataclass
class RequestFacts:
    """What one request says about itself, each fact worked out only when a condition asks."""

    user_agent: str
    ip: str
    url: str
    referrer: str
    now: float
    _local: dict[str, datetime] = field(default_factory=dict)

    def device(self) -> str:
        # Cached per agent as the parser reads it: made-up long agents cannot fill memory.
        return device_type(self.user_agent[:MAX_USER_AGENT])

    def country(self) -> str:
        return country_of(self.ip)

    def local_time(self, time_zone: str) -> datetime:
        local = self._local.get(time_zone)
        if local is None:
            local = self._local[time_zone] = datetime.fromtimestamp(self.now, _zone(time_zone))
        return local


def conditions_match(conditions: dict, facts: RequestFacts, *, time_zone: str) -> bool:
    """True when the request meets every condition (a validated conditions object)."""
    devices = conditions.get("devices")
    if devices is not None and facts.device() not in devices:
        return False
    countries = conditions.get("countries")
    if countries is not None and facts.country() not in countries:
        return False
    hours = conditions.get("hours")
    if hours is not None:
        hour, start, end = facts.local_time(time_zone).hour, hours["from"], hours["to"]
        if not (start <= hour < end if start < end else hour >= start or hour < end):
            return False
    weekdays = conditions.get("weekdays")
    if weekdays is not None and facts.local_time(time_zone).weekday() not in weekdays:
        return False
    page = conditions.get("page_contains")
    if page is not None and page.casefold() not in facts.url.casefold():
        return False
    referrer = conditions.get("referrer_contains")
    return referrer is None or referrer.casefold() in facts.referrer.casefold()


@lru_cache(maxsize=8192)
def device_type(user_agent: str) -> str:
    """mobile, tablet, desktop or bot, from a user agent string (desktop when unknown)."""
    from ua_parser import parse

    if not user_agent:
        return "desktop"
    parsed = parse(user_agent[:MAX_USER_AGENT])
    device = parsed.device
    system = parsed.os.family if parsed.os else ""
    if device is not None and device.family == "Spider":
        return "bot"
    family, brand = (device.family, device.brand or "") if device else ("", "")
    if family in {"iPad", "Kindle"} or "Tablet" in brand:
        return "tablet"
    if system == "Android" and "Mobile" not in user_agent:
        return "tablet"
    if system in MOBILE_SYSTEMS or "Mobile" in user_agent:
        return "mobile"
    return "desktop"


@lru_cache(maxsize=65_536)
def country_of(ip: str) -> str:
    """The ISO country code of an address, '' when unknown or without a GeoIP database."""
    reader = _geoip_reader()
    if reader is None or not ip:
        return ""
    try:
        record = reader.get(ip)
    except ValueError:
        return ""
    if not isinstance(record, dict):
        return ""
    country = record.get("country") or record.get("registered_country") or {}
    return str(country.get("iso_code", "")).upper() if isinstance(country, dict) else ""


@cache
def _geoip_reader() -> Any:
    if not settings.GEOIP_PATH:
        return None
    import maxminddb

    try:
        # MODE_MMAP: the node's worker processes share the file's pages.
        return maxminddb.open_database(str(settings.GEOIP_PATH), maxminddb.MODE_MMAP)
    except (OSError, maxminddb.InvalidDatabaseError):
        logger.exception("GEOIP_PATH %s is not a readable database", settings.GEOIP_PATH)
        return None


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def criteria_warm_up() -> None:
    """Load the user agent parser's rules now (about 0.1 s) rather than in a request."""
    device_type("Mozilla/5.0 (warm-up)")


def criteria_reset() -> None:
    """Forget cached lookups (after GEOIP_PATH changes)."""
    _geoip_reader.cache_clear()
    country_of.cache_clear()
