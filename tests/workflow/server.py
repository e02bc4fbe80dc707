"""A real HTTP server on 127.0.0.1 for the workflow tests and benchmark: a list of entries.

``GET /entries`` gives ``[{"id", "title"}, ...]``; ``GET /entries/<id>`` gives the entry
with its ``text``. Every request sleeps ``latency`` seconds first; ``fail`` maps a path to
how many of its first requests get a 503 (``-1``: all of them).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

TEXT = (
    "parallel batches keep every item on its own copy of the node chain so no item "
    "ever reads another item's params and retries count attempts locally"
)
WORDS = TEXT.split(" ")


def make_entries(n: int) -> list[dict[str, Any]]:
    """``n`` entries whose texts differ in length and words, the same on every call."""
    entries = []
    for i in range(1, n + 1):
        length = 4 + (i * 3) % 9
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(length))
        entries.append({"id": i, "title": f"Entry {i}", "text": text})
    return entries


class EntryServer:
    """``with EntryServer(entries) as server: server.url`` -- started and shut down."""

    def __init__(
        self,
        entries: list[dict[str, Any]],
        *,
        latency: float = 0.0,
        fail: Optional[dict[str, int]] = None,
    ) -> None:
        self.entries = {str(e["id"]): e for e in entries}
        self.index = [{"id": e["id"], "title": e["title"]} for e in entries]
        self.latency = latency
        self.fail = dict(fail or {})
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A short poll interval: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def _respond(self, path: str) -> tuple[int, Any]:
        with self._lock:
            self.requests[path] += 1
            seen = self.requests[path]
        if self.latency:
            time.sleep(self.latency)
        failures = self.fail.get(path, 0)
        if failures < 0 or seen <= failures:
            return 503, {"error": f"planned failure of {path}, request {seen}"}
        if path == "/entries":
            return 200, self.index
        prefix, _, key = path.rpartition("/")
        if prefix == "/entries" and key in self.entries:
            return 200, self.entries[key]
        return 404, {"error": f"no such path {path}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, payload = server._respond(self.path)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler

    def __enter__(self) -> EntryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
