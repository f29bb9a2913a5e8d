"""Downloads of images from http(s) URLs users give: bounded, resumable, and kept off the
site's private addresses.

A download is kept under the server's data directory, in a file named by a digest of its URL,
until it is complete, so that one cut off half-way continues from where it stopped: the next
request asks for the rest (``Range: bytes=N-``, with ``If-Range`` naming the version first
fetched when the server said one). A server that answers such a request with the whole file
(it ignores ranges, or the file changed) is read again from the start. Within one call a
cut-off download is resumed up to ``attempts`` times; after that, the bytes kept wait for
the next call. Parts nobody came back for are removed after ``PART_TTL_S``.

Every bound is enforced with its own error: the URL's length and scheme, the size (the
announced one at once, the received one as it comes), the number of redirects (each hop is
checked again), the time between two reads. The host is checked before anything is sent
(the address written, or every address a name resolves to) and the address actually reached
after connecting, before the body is read; ``allow_host`` says whether a private one may be
reached (see ``verify/addresses.py``, which the composition root hands in).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from stratuslab.errors import BackendError, Conflict, Forbidden, Invalid, NotFound, TooLarge

MAX_URL = 2048
MAX_REDIRECTS = 5
ATTEMPTS = 4
READ_TIMEOUT = 60.0  # between two reads of the body: a stalled server fails, a slow one does not
CONNECT_TIMEOUT = 10.0
PART_TTL_S = 2 * 86400
PROGRESS_EVERY_S = 0.25

Progress = Callable[[int, int | None], None]  # bytes kept so far, bytes in all when known
HostCheck = Callable[[str], bool]  # whether an address (or localhost) is a private one


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    resumed_from: int  # bytes that were already there when this call started
    requests: int


class _Cut(Exception):
    """The body stopped before its end: resumed by the next attempt."""


def check_url(url: str) -> str:
    """``url`` when it is an http(s) URL with a host, of a bounded length; ``Invalid`` else."""
    if len(url) > MAX_URL:
        raise Invalid(f"URL of {len(url)} characters: at most {MAX_URL}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Invalid(f"URL {url[:200]!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise Invalid(f"URL {url[:200]!r}: only http:// and https:// URLs are downloaded")
    if not parts.hostname:
        raise Invalid(f"URL {url[:200]!r} names no host")
    if port == 0:
        raise Invalid(f"URL {url[:200]!r}: port 0")
    return url


def guard_host(url: str, *, is_private: HostCheck, allowed: bool, resolve: bool = True) -> None:
    """Refuse ``url`` when its host is, or resolves to, a private address of this site and
    that is not ``allowed``."""
    if allowed:
        return
    host = (urlsplit(url).hostname or "").strip("[]").lower().rstrip(".")
    addresses = [host]
    if resolve and not is_private(host) and not _is_address(host):
        try:
            found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise BackendError(f"cannot resolve {host!r}: {exc}") from None
        addresses += [str(info[4][0]) for info in found]
    for address in addresses:
        if is_private(address):
            raise _private(host)


def download(
    url: str,
    *,
    folder: Path,
    max_bytes: int,
    is_private: HostCheck,
    private_allowed: bool,
    progress: Progress | None = None,
    attempts: int = ATTEMPTS,
    transport: httpx.BaseTransport | None = None,
) -> Downloaded:
    """Download ``url`` into ``folder`` (resuming what an earlier call kept), at most
    ``max_bytes``; the file, whole. Raises ``TooLarge`` over the bound (the part is deleted),
    ``Conflict`` while another call downloads the same URL, ``NotFound`` for a 404 or 410,
    ``BackendError`` for another answer or a download still cut off after ``attempts``
    (its bytes are kept for the next call)."""
    check_url(url)
    folder.mkdir(parents=True, exist_ok=True)
    _sweep(folder)
    key = hashlib.sha256(url.encode()).hexdigest()[:40]
    part, meta = folder / f"{key}.part", folder / f"{key}.json"
    report = _throttled(progress)
    with _locked(folder / f"{key}.lock", url), _client(transport) as client:
        start = part.stat().st_size if part.exists() else 0
        requests = 0
        for attempt in range(1, attempts + 1):
            requests += 1
            try:
                size = _fetch(
                    client, url, part, meta, max_bytes, is_private, private_allowed, report
                )
            except _Cut as cut:
                if attempt == attempts:
                    kept = part.stat().st_size if part.exists() else 0
                    raise BackendError(
                        f"the download of {url[:200]} was cut off {attempts} times ({cut}); "
                        f"{kept} bytes are kept",
                        hint="import again: the download continues from where it stopped",
                    ) from None
                time.sleep(min(0.2 * attempt, 1.0))
                continue
            except (TooLarge, Forbidden):
                part.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
                raise
            meta.unlink(missing_ok=True)
            return Downloaded(path=part, size=size, resumed_from=start, requests=requests)
    raise AssertionError("unreachable")


def forget(url: str, folder: Path) -> None:
    """Delete what is kept of ``url``'s download."""
    key = hashlib.sha256(url.encode()).hexdigest()[:40]
    for suffix in (".part", ".json"):
        (folder / f"{key}{suffix}").unlink(missing_ok=True)


# -- one request ---------------------------------------------------------------------------


def _fetch(
    client: httpx.Client,
    url: str,
    part: Path,
    meta: Path,
    max_bytes: int,
    is_private: HostCheck,
    private_allowed: bool,
    report: Progress,
) -> int:
    have = part.stat().st_size if part.exists() else 0
    validator = _validator(meta, url) if have else None
    headers = {"Accept-Encoding": "identity"}  # the bytes as they are, to count and resume
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    with _open(client, url, headers, is_private, private_allowed) as response:
        status = response.status_code
        if status == 416 and have:
            total = _total(response.headers.get("content-range", ""))
            if total == have:
                report(have, have)
                return have  # it was all there already
            part.unlink()
            raise _Cut("the server no longer has what was kept; starting again")
        if status in (404, 410):
            raise NotFound(f"{url[:200]} answered {status}: nothing to download there")
        if status == 206 and have:
            begins = _range_start(response.headers.get("content-range", ""))
            if begins != have:
                part.unlink()
                raise _Cut(f"the server sent a range from byte {begins}, not {have}")
            total = _total(response.headers.get("content-range", ""))
            mode = "ab"
        elif status == 200:
            have, mode = 0, "wb"  # the whole file: the server ignored the range, or it changed
            total = _length(response.headers.get("content-length"))
            _remember(meta, url, response.headers)
        else:
            raise BackendError(f"{url[:200]} answered {status} {response.reason_phrase}")
        if total is not None and total > max_bytes:
            raise TooLarge(f"{url[:200]} has {total} bytes: at most {max_bytes} are downloaded")
        report(have, total)
        try:
            with part.open(mode) as out:
                for block in response.iter_raw():  # as it arrives: a cut loses nothing read
                    have += len(block)
                    if have > max_bytes:
                        raise TooLarge(
                            f"{url[:200]} sent more than {max_bytes} bytes, the most allowed"
                        )
                    out.write(block)
                    report(have, total)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
            raise _Cut(f"at byte {have}: {exc}") from None
        if total is not None and have < total:
            raise _Cut(f"at byte {have} of {total}")
        report(have, total if total is not None else have)
        return have


@contextlib.contextmanager
def _open(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    is_private: HostCheck,
    private_allowed: bool,
) -> Iterator[httpx.Response]:
    """The answer of ``url``, redirects followed by hand (each hop checked like the first)."""
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url)
        guard_host(url, is_private=is_private, allowed=private_allowed)
        try:
            response = client.send(client.build_request("GET", url, headers=headers), stream=True)
        except httpx.TimeoutException as exc:
            raise _Cut(f"{url[:200]} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise BackendError(f"cannot download {url[:200]}: {exc}") from None
        try:
            _check_peer(response, url, is_private, private_allowed)
            if response.status_code in (301, 302, 303, 307, 308):
                target = response.headers.get("location", "")
                if not target:
                    raise BackendError(f"{url[:200]} redirects nowhere")
                url = urljoin(url, target)
                continue
            yield response
            return
        finally:
            response.close()
    raise BackendError(f"more than {MAX_REDIRECTS} redirects from {url[:200]}")


def _check_peer(response: httpx.Response, url: str, is_private: HostCheck, allowed: bool) -> None:
    """A name that resolved to a public address when checked may reach a private one when
    connecting: the address reached is checked before a byte of the body is read."""
    if allowed:
        return
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if peer and is_private(str(peer[0])):
        raise _private(urlsplit(url).hostname or "")


def _private(host: str) -> Forbidden:
    return Forbidden(
        f"{host!r} is a private address of this site: an import may not make the server reach it",
        hint="ask an administrator (they may import from it, or allow it: "
        "image_import_private_addresses)",
    )


def _client(transport: httpx.BaseTransport | None) -> httpx.Client:
    return httpx.Client(
        transport=transport,
        follow_redirects=False,
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        headers={"User-Agent": "StratusLab image import"},
    )


# -- helpers ---------------------------------------------------------------------------------


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _length(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _range_start(content_range: str) -> int | None:
    unit, _, spec = content_range.partition(" ")
    first = spec.split("-", 1)[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _total(content_range: str) -> int | None:
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _remember(meta: Path, url: str, headers: httpx.Headers) -> None:
    """What names this version of the file (its ETag, else its Last-Modified), for If-Range."""
    tag = headers.get("etag", "")
    validator = tag if tag and not tag.startswith("W/") else headers.get("last-modified", "")
    meta.write_text(json.dumps({"url": url, "validator": validator[:512]}))


def _validator(meta: Path, url: str) -> str | None:
    try:
        kept = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    value = kept.get("validator") if kept.get("url") == url else None
    return str(value) if value else None


def _throttled(progress: Progress | None) -> Progress:
    if progress is None:
        return lambda _done, _total: None
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or (total is not None and done >= total):
            last[0] = now
            progress(done, total)

    return report


def _sweep(folder: Path) -> None:
    """Remove the parts (and their notes) nobody came back for."""
    cutoff = time.time() - PART_TTL_S
    for pattern in ("*.part", "*.json", "*.lock"):
        for path in folder.glob(pattern):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


@contextlib.contextmanager
def _locked(path: Path, url: str) -> Iterator[None]:
    """One download of a URL at a time (on this machine)."""
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"{url[:200]} is being downloaded already", hint="try again later"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
