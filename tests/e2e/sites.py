"""Client web sites for the tag's browser tests: pages served from other origins than delivery.

One loopback server answers for every *.localhost host name (the browser maps them to
127.0.0.1), so shop.localhost, www.shop.localhost and portal.localhost are distinct origins.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SiteServer:
    def __init__(self):
        self.pages: dict[str, tuple[str, dict[str, str]]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                html, headers = server.pages.get(path, ("not found", {}))
                body = html.encode()
                self.send_response(200 if path in server.pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def origin(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def start(self) -> SiteServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def page_html(snippet: str, body: str, *, nonce: str = "", head: str = "") -> str:
    """A client's page: the pasted snippet in its head (with the page's CSP nonce, if any)."""
    if nonce:
        snippet = snippet.replace("<script>", f'<script nonce="{nonce}">', 1)
    return (
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"{snippet}{head}</head><body>{body}</body></html>"
    )
