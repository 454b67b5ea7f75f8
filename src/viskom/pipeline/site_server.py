"""`viskom serve`: the dashboard on a local port, for a quick look.

Serves the data root's `site/` and `products/` folders only (the pages link the product
tree as `../products/...`): never the raw frames, the database or the caches. Binds to
127.0.0.1 unless told otherwise; any other web server (or `file://`) works as well.
"""

from __future__ import annotations

import functools
import http.server
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

SERVED = ("site", "products")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files under the data root's site/ and products/; / goes to the site."""

    def do_GET(self) -> None:
        if urlsplit(self.path).path in ("", "/"):
            self.send_response(302)
            self.send_header("Location", "/site/index.html")
            self.end_headers()
            return
        super().do_GET()

    def send_head(self):  # type: ignore[no-untyped-def]
        path = unquote(urlsplit(self.path).path).lstrip("/")
        top = path.split("/", 1)[0]
        if top not in SERVED or ".." in path.split("/") or "/." in "/" + path:
            self.send_error(404, "not part of the dashboard")
            return None
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_server(data_root: Path, host: str = "127.0.0.1", port: int = 8000) -> Any:
    """A ThreadingHTTPServer serving the dashboard of `data_root` (port 0: any free port)."""
    handler = functools.partial(_Handler, directory=str(data_root))
    return http.server.ThreadingHTTPServer((host, port), handler)
