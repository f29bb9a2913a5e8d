"""How a server proves it holds the site token without the token travelling.

A client sends ``GET /health?challenge=<nonce>`` (a fresh random nonce, no credentials). The
server answers with what it is (version, pid, build id, idle mode) and a proof: the
HMAC-SHA256, keyed with the site token, of the nonce together with the pid and build id it
reports. Only a holder of the token can compute it, and a fresh nonce makes an old answer
useless. The client checks the proof in constant time before it sends the token at all, so
whatever else answers on the port (a squatter, a server of another site) never sees it.

This stops a process posing as the server; it does not stop someone on the path between a
client and a remote server over plain HTTP, who could relay the challenge: across a network,
only TLS (an ``https://`` server URL) does that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import NamedTuple

from stratuslab.errors import BackendUnavailable

NONCE_PATTERN = r"^[0-9a-f]{32,128}$"


class ServerIdentity(NamedTuple):
    """What answers at ``url``, as its ``/health`` says. (A named tuple: the CLI defines it on
    the way to its first request, where a dataclass would cost a millisecond more.)"""

    url: str
    pid: int
    version: str
    build: str | None  # None: a server older than build ids
    idle_exit: float | None  # seconds idle before it exits (0: never); None: it does not say
    proven: bool  # it answered the challenge with the token the client holds


def nonce() -> str:
    return os.urandom(16).hex()


def proof(token: str, *, nonce: str, pid: int, build: str) -> str:
    message = f"stratuslab health\n{nonce}\n{pid}\n{build}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def read_health(url: str, status: int, data: bytes, *, token: str, nonce: str) -> ServerIdentity:
    """The identity in a ``/health`` answer to ``nonce``. Anything but a StratusLab server's
    answer is an error that says what answered instead."""
    try:
        body = json.loads(data) if status == 200 else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "ok" or type(body.get("pid")) is not int:
        shown = data[:80].decode(errors="replace").strip() or "(empty)"
        raise BackendUnavailable(
            f"{url} answers, but not as a StratusLab server (HTTP {status}: {shown})",
            hint="something else holds the port: stop it, or set server_port",
        )
    pid: int = body["pid"]
    build = body.get("build")
    build = build if isinstance(build, str) else None
    idle_exit = body.get("idle_exit")
    answer = body.get("proof")
    proven = (
        bool(token)
        and build is not None
        and isinstance(answer, str)
        and hmac.compare_digest(
            proof(token, nonce=nonce, pid=pid, build=build).encode(), answer.encode()
        )
    )
    return ServerIdentity(
        url=url,
        pid=pid,
        version=str(body.get("version")),
        build=build,
        idle_exit=float(idle_exit) if isinstance(idle_exit, int | float) else None,
        proven=proven,
    )
