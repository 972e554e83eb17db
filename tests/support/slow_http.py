"""A loopback HTTP file server whose responses can be delayed (to make a model load slow)."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    delay_s = 0.0

    def do_GET(self) -> None:  # noqa: N802
        time.sleep(self.delay_s)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@contextmanager
def serve_dir(root: Path, delay_s: float = 0.0) -> Iterator[str]:
    """Serve ``root`` at the yielded base URL until the block ends."""
    handler = type("Handler", (_Handler,), {"delay_s": delay_s})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
