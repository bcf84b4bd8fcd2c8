"""Driving the reviewers' web console as a browser does in tests: the CSRF token a
page's forms carry, signing in through the sign-in form with a principal's token
(``tests.reviewers``), and a web server for the inputs an item page shows."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
import httpx2


def csrf(page: str) -> str:
    """The CSRF token the page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def sign_in(browser: httpx.Client | httpx2.Client, token: str) -> httpx.Response | httpx2.Response:
    """The sign-in form posted with token; the browser then holds the session (an
    httpx client on a running console, or Starlette's TestClient, an httpx2 one)."""
    page = browser.get("/signin")
    return browser.post("/signin", data={"token": token, "csrf_token": csrf(page.text)})


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """handler answering on a loopback port in a thread: its http://127.0.0.1:PORT."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serving_inputs(
    files: Mapping[str, tuple[str, bytes]], redirects: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Where an item page's inputs live (a bucket behind HTTP, in production), by
    ``serving``: each of files (path: its content type and body) answered 200, each of
    redirects (path: where to) answered 302, any other path 404."""
    moved = dict(redirects or {})

    class Inputs(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in moved:
                self.send_response(302)
                self.send_header("Location", moved[self.path])
                self.end_headers()
                return
            kind, body = files.get(self.path, ("text/plain", b""))
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    with serving(Inputs) as base:
        yield base
