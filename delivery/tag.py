"""The served tag and the snippet a client pastes into their pages (T1).

The tag's body is the minified source with the client's settings in front. It names no host
(the tag finds delivery from its own address), so a client's body, its version and its
integrity hash are the same on every node.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from calmjs.parse import es5
from calmjs.parse.unparsers.es5 import minify_print
from django.conf import settings

SNIPPET = (
    "<script>\n"
    "(function(w,d,n,s,h){{w.CoremetricsObject=n;w[n]=w[n]||function(){{(w[n].q=w[n].q||[])"
    ".push(arguments)}};var t=d.createElement('script');t.async=true;t.src=s;"
    "if(h){{t.integrity=h;t.crossOrigin='anonymous'}}"
    "var c=d.currentScript;if(c&&c.nonce)t.nonce=c.nonce;"
    "d.head.appendChild(t)}})(window,document,'cm',{},{});\n"
    "cm('track','page_view');\n"
    "</script>"
)


@dataclass(frozen=True)
class TagBody:
    body: bytes
    version: str
    integrity: str


@cache
def _source() -> str:
    """tag.js minified, its local names shortened (the 4 KB budget: bench/tag_size.py)."""
    source = (Path(settings.BASE_DIR) / "static" / "cm" / "tag.js").read_text()
    return minify_print(es5(source), obfuscate=True, obfuscate_globals=False)


def tag_config(*, public_key: str, cookie_domain: str, consent_mode: str, timeout_ms: int) -> dict:
    """What the tag is told about its client."""
    return {
        "key": public_key,
        "cookieDays": settings.VISITOR_COOKIE_DAYS,
        "idleMinutes": settings.SESSION_IDLE_MINUTES,
        "cookieDomain": cookie_domain,
        "consent": consent_mode,
        "timeout": timeout_ms,
    }


def client_tag_config(client) -> dict:
    """tag_config from a Client row (its cookie domain, consent mode and timeout)."""
    return tag_config(
        public_key=client.public_key,
        cookie_domain=client.cookie_domain,
        consent_mode=client.consent_mode,
        timeout_ms=client.tag_timeout_ms,
    )


@lru_cache(maxsize=1024)
def _body(config_json: str) -> TagBody:
    body = f"var __cmConfig={config_json};\n{_source()}".encode()
    digest = hashlib.sha384(body).digest()
    return TagBody(
        body=body,
        version=hashlib.sha256(body).hexdigest()[:12],
        integrity="sha384-" + base64.b64encode(digest).decode(),
    )


def tag_body(config: dict) -> TagBody:
    """The client's tag as served, with its version and Subresource Integrity hash."""
    return _body(json.dumps(config, sort_keys=True, separators=(",", ":")))


def tag_url(*, base_url: str, public_key: str, version: str = "") -> str:
    name = f"{public_key}.{version}" if version else public_key
    return f"{base_url.rstrip('/')}/t/v1/{name}.js"


def tag_snippet(*, base_url: str, public_key: str, pinned: TagBody | None = None) -> str:
    """The HTML to paste before </head>: loads the tag asynchronously with a command queue.

    Pinned to a version, the snippet carries its integrity hash (and must be updated when the
    tag changes); unpinned, it always loads the current tag.
    """
    url = tag_url(
        base_url=base_url, public_key=public_key, version=pinned.version if pinned else ""
    )
    # JSON strings are valid JS strings; escaping "<" keeps "</script>" from closing the tag.
    source = json.dumps(url).replace("<", "\\u003c")
    integrity = json.dumps(pinned.integrity if pinned else "")
    return SNIPPET.format(source, integrity)
