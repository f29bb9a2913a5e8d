"""An HTTP server posing as the StratusLab server, on a free loopback port, in the test's own
process (a thread, no subprocess): it answers every request with what the test decides and
records every request it got, headers included, so a test can show what a client sent it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


Answer = tuple[int, str, bytes]  # status, content type, body


def health(**fields: Any) -> Callable[[str], Answer]:
    """Answer every request as a StratusLab /health would, with ``fields`` (a proof among
    them if the impostor cares to make one up)."""
    body = json.dumps({"status": "ok", "version": "0.1.0", **fields}).encode()
    return lambda _path: (200, "application/json", body)


class Impostor:
    def __init__(self, answer: Callable[[str], Answer]) -> None:
        self.received: list[Received] = []
        impostor = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = self.rfile.read(int(headers.get("content-length", "0")))
                impostor.received.append(Received(self.command, self.path, headers, body))
                status, content_type, data = answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads ``received`` instead."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Impostor:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def saw(self, secret: str) -> bool:
        """Whether ``secret`` appeared anywhere in what it received."""
        return any(
            secret in r.path
            or secret.encode() in r.body
            or any(secret in value for value in r.headers.values())
            for r in self.received
        )
