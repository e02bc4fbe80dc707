"""A demo server for examples/workflow.json: a list of entries on http://127.0.0.1:8765.

    python examples/serve.py                 # serves until Ctrl-C
    python examples/serve.py --port 0        # any free port; prints the URL

``GET /entries`` lists ``[{"id", "title"}]``; ``GET /entries/<id>`` gives one entry with
its ``text``. Each request waits ``--latency`` seconds (default 0.1), like a real service,
so running the workflow with ``--sequential`` and without shows what parallel buys.
Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXTS = [
    "PocketFlow keeps the whole engine in a hundred lines: prep, exec and post.",
    "A batch node runs one node over many items; parabatch runs them in parallel.",
    "Each parallel item works on its own deep copy of the wrapper chain.",
    "Retries count attempts in a local variable, never on the shared instance.",
    "Results come back in input order, whichever item finished first.",
    "A parallel group runs independent nodes side by side and merges in child order.",
    "Every LLM call is recorded in one log whose appends take a lock.",
    "Invalid workflows are refused before anything runs, every problem at once.",
    "The progress bar draws on stderr only when stderr is a terminal.",
    "Exit code 0 means ok, 1 a failed node, and 2 an invalid workflow.",
    "The shell node runs one subprocess per item, with no shell in between.",
    "The simulated LLM answers from the prompt alone, so runs repeat exactly.",
]
ENTRIES = [{"id": i, "title": f"Note {i}", "text": t} for i, t in enumerate(TEXTS, 1)]


def make_handler(latency: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(latency)
            status: int = 200
            payload: Any
            if self.path == "/entries":
                payload = [{"id": e["id"], "title": e["title"]} for e in ENTRIES]
            elif self.path.startswith("/entries/") and self.path[9:].isdigit():
                found = [e for e in ENTRIES if e["id"] == int(self.path[9:])]
                status, payload = (200, found[0]) if found else (404, {"error": "no entry"})
            else:
                status, payload = 404, {"error": f"no such path {self.path}"}
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    args = parser.parse_args()
    with ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.latency)) as httpd:
        host, port = httpd.server_address[:2]
        print(f"serving {len(ENTRIES)} entries on http://{host!s}:{port} (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()


if __name__ == "__main__":
    main()
