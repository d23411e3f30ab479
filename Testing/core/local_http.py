"""A real HTTP server on 127.0.0.1 for download tests: Range requests, dropped connections, 404."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer(ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes) on a free port of 127.0.0.1, in a background thread.

    `requests` records (path, Range header or None) of every GET. Setting `drop_after` to n makes
    the next response announce its full length, send n body bytes, then close the connection.
    `ignore_range` answers every request with the whole file (200), as servers without Range do.
    """

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: int | None = None
        self.ignore_range = False
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class RangeHandler(BaseHTTPRequestHandler):
    """GET with `Range: bytes=N-` support (206, or 416 past the end)."""

    server: FileServer

    def do_GET(self) -> None:
        requested = self.headers.get("Range")
        self.server.requests.append((self.path, requested))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if requested and not self.server.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.server.drop_after is not None:
            payload, self.server.drop_after = payload[: self.server.drop_after], None
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass
