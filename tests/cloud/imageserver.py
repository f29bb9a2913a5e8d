"""A real HTTP server on loopback that serves one image, for the import tests.

``mode`` says how it answers: ``range`` honours ``Range`` (206, with an ETag for ``If-Range``),
``ignore`` always sends the whole file (200), and ``cut`` is ``range`` but, for the first
``cuts`` requests, closes the connection half-way through the body it announced. Every
request's ``Range`` header is kept in ``ranges``, so that a test sees what was asked.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml


def image_archive(
    *, properties: dict[str, str] | None = None, filler: int = 300_000, seed: str = "x"
) -> bytes:
    """A small LXD image: metadata.yaml and a rootfs/ with a file in it, gzip-compressed;
    ``filler`` bytes of incompressible data make it big enough to cut half-way."""
    metadata = {
        "architecture": "x86_64",
        "creation_date": 1700000000,
        "properties": {
            "description": "an image from elsewhere",
            "os": "debian",
            **(properties or {}),
        },
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            ("metadata.yaml", yaml.safe_dump(metadata).encode()),
            ("rootfs/etc/hostname", b"elsewhere\n"),
            ("rootfs/var/filler", _noise(filler, seed)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.pax_headers = {"SCHILY.xattr.user.test": "kept"}
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("rootfs/etc/alias")
        link.type, link.linkname = tarfile.SYMTYPE, "hostname"
        tar.addfile(link)
    return gzip.compress(raw.getvalue(), compresslevel=1)


def _noise(size: int, seed: str) -> bytes:
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


@dataclass
class Served:
    data: bytes
    mode: str = "range"
    cuts: int = 0
    ranges: list[str | None] = field(default_factory=list)
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that stops reading (a refused download) is no news


@contextmanager
def serving(
    data: bytes, *, mode: str = "range", cuts: int = 0, path: str = "/images/elsewhere.tar.gz"
) -> Iterator[Served]:
    served = Served(data, mode, cuts)
    etag = '"' + hashlib.sha1(data, usedforsecurity=False).hexdigest() + '"'

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            served.ranges.append(asked)
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", served.extra["location"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path != path:
                self.send_error(404)
                return
            start = 0
            if asked and served.mode != "ignore" and self.headers.get("If-Range") in (None, etag):
                start = int(asked.removeprefix("bytes=").split("-")[0])
            body = served.data[start:]
            if start:
                if start >= len(served.data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(served.data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(served.data) - 1}/{len(served.data)}"
                )
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            if served.mode != "ignore":
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if served.mode == "cut" and served.cuts > 0:
                served.cuts -= 1
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    server = _Quiet(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
