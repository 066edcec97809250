"""Drive a running embedded-default stack through the loop over HTTP (used by smoke.sh).

A new visitor gets the first-time visitors' banner and sends a purchase; the beat-scheduled
consolidation, the table rebuild it triggers and the file-backed table store must then give
them the buyers' banner, all without PostgreSQL or Redis.
"""

import email
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

BASE = sys.argv[1]
DEFAULT = "Banner: spring season (default)"
BUYER = "Banner: thanks, 15% off"
FIRST = "Banner: first time, 10% off"


def request(path: str, data: bytes | None = None, method: str | None = None):
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "text/plain")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def check(condition: bool, message: str) -> None:
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        sys.exit(1)


def wait_until(probe, seconds: float, step: float = 1.0):
    deadline = time.monotonic() + seconds
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)


def main() -> None:
    up = wait_until(lambda: _status("/demo/shop/") == 200, 180, 0.5)
    check(up, "the stack answers on /demo/shop/")
    status, page = request("/demo/shop/")
    match = re.search(rb"/t/v1/([A-Za-z0-9_-]+)\.js", page)
    check(status == 200 and match is not None, "the demo shop embeds the tag snippet")
    key = match.group(1).decode()
    status, tag = request(f"/t/v1/{key}.js")
    check(status == 200 and b"__cmConfig" in tag, "the tag is served for the demo client")

    status, body = request(f"/d/v1/visitor?k={key}", data=b"", method="POST")
    identity = json.loads(body)
    check(status == 200, "a visitor id is issued")
    query = f"/d/v1/query?k={key}&v={identity['visitor']}&s={identity['session']}&p=home-banner"
    check(
        _banner(query) == ("table", FIRST),
        "a new visitor gets the first-time visitors' banner (the table's answer for newcomers)",
    )
    check(_banner(f"{query}&a=1") == ("default", DEFAULT), "without consent, the default banner")

    now = int(time.time() * 1000)
    events = [
        {"id": str(uuid.uuid4()), "type": "page_view", "at": now},
        {"id": str(uuid.uuid4()), "type": "cart_add", "at": now, "product_id": "driver-x1"},
        {"id": str(uuid.uuid4()), "type": "purchase", "at": now, "order_id": "S1", "value": 349},
    ]
    batch = {**identity, "sent_at": now, "events": events}
    status, body = request(f"/c/v1/collect?k={key}", data=json.dumps(batch).encode())
    check(status == 202, f"the purchase is collected ({status} {body.decode()})")
    status, body = request(f"/c/v1/collect?k={key}", data=b"{not json")
    check(status == 400, "a malformed batch is refused with 400")

    personalized = wait_until(lambda: _banner(query) == ("table", BUYER), 150, 2.0)
    check(
        bool(personalized),
        "beat consolidated, the worker rebuilt the table, the buyer gets the buyers' banner",
    )
    status, _ = request("/admin/login/")
    check(status == 200, "the console login page answers")


def mail(directory: str) -> None:
    """The demo campaign's messages, as the file backend wrote them: each has its tracking
    addresses, the pixel answers an image and a link goes to the shop."""
    files = sorted(Path(directory).glob("*.log"))
    check(bool(files), f"the email campaign wrote messages to {directory}")
    message = email.message_from_bytes(files[0].read_bytes().split(b"\n" + b"-" * 79)[0])
    check(message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click", "one-click unsubscribe")
    html = next(part for part in message.walk() if part.get_content_type() == "text/html")
    body = html.get_payload(decode=True).decode()
    pixel = re.search(r'<img src="http://[^/]+(/e/o/[^"]+)"', body)
    status, image = request(pixel.group(1)) if pixel else (0, b"")
    check(status == 200 and image.startswith(b"GIF89a"), "the open pixel answers an image")
    link = re.search(r'href="http://[^/]+(/e/c/[^"]+)"', body)
    check(link is not None, "the shop link goes through the tracked redirect")
    target = urllib.request.Request(BASE + link.group(1).replace("&amp;", "&"))
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(target, timeout=10)
        check(False, "the tracked link redirects")
    except urllib.error.HTTPError as redirect:
        check(
            redirect.code == 302
            and "/demo/shop/product/driver-x1/?cm_em=" in redirect.headers["Location"],
            "the tracked link redirects to the shop with the message's token",
        )


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _status(path: str) -> int:
    try:
        return request(path)[0]
    except OSError:
        return 0


def _banner(query: str) -> tuple[str, str] | None:
    status, body = request(query)
    if status != 200:
        return None
    [answer] = json.loads(body)["placements"]
    return answer["source"], answer["content"]["name"]


if __name__ == "__main__":
    if "--mail" in sys.argv:
        mail(sys.argv[sys.argv.index("--mail") + 1])
    else:
        main()
