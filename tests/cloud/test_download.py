"""Downloads from real HTTP servers on loopback: resumed where they were cut off, read again
from a server that ignores ranges, bounded, and kept off private addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratuslab.cloud import download
from stratuslab.errors import BackendError, Conflict, Forbidden, Invalid, NotFound, TooLarge
from stratuslab.verify.addresses import is_private
from tests.cloud.imageserver import image_archive, serving

DATA = image_archive()


def fetch(url: str, folder: Path, **options: object) -> download.Downloaded:
    given: dict[str, object] = {
        "folder": folder,
        "max_bytes": 10 << 20,
        "is_private": is_private,
        "private_allowed": True,
    }
    given.update(options)
    return download.download(url, **given)  # type: ignore[arg-type]


def test_a_download_cut_off_half_way_continues_from_where_it_stopped(tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    with serving(DATA, mode="cut", cuts=1) as served:
        got = fetch(served.url, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert got.path.read_bytes() == DATA and got.requests == 2
    half = len(DATA) // 2
    assert served.ranges == [None, f"bytes={half}-"]  # the rest was asked for, not the whole
    assert seen[-1] == (len(DATA), len(DATA))


def test_a_download_still_cut_off_keeps_its_bytes_for_the_next_call(tmp_path: Path) -> None:
    with serving(DATA, mode="cut", cuts=1) as served:
        with pytest.raises(BackendError, match="cut off 1 times") as cut:
            fetch(served.url, tmp_path, attempts=1)
        assert "continues from where it stopped" in str(cut.value.hint)
        again = fetch(served.url, tmp_path, attempts=1)
    assert again.path.read_bytes() == DATA
    assert again.resumed_from == len(DATA) // 2
    assert served.ranges == [None, f"bytes={len(DATA) // 2}-"]


def test_a_server_that_ignores_ranges_is_read_again_from_the_start(tmp_path: Path) -> None:
    with serving(DATA, mode="cut", cuts=1) as served:
        with pytest.raises(BackendError):
            fetch(served.url, tmp_path, attempts=1)
        served.mode = "ignore"  # the same URL, now served by a server that sends it whole
        got = fetch(served.url, tmp_path, attempts=1)
    assert got.path.read_bytes() == DATA  # not the first half twice
    assert served.ranges[-1] == f"bytes={len(DATA) // 2}-"


def test_a_complete_download_is_not_fetched_again(tmp_path: Path) -> None:
    with serving(DATA) as served:
        first = fetch(served.url, tmp_path)
        second = fetch(served.url, tmp_path)
    assert first.path == second.path and second.path.read_bytes() == DATA
    assert served.ranges == [None, f"bytes={len(DATA)}-"]  # answered 416: all there


def test_more_than_the_bound_is_refused_and_deleted(tmp_path: Path) -> None:
    with (
        serving(DATA) as served,
        pytest.raises(TooLarge, match=f"has {len(DATA)} bytes: at most 1000"),
    ):
        fetch(served.url, tmp_path, max_bytes=1000)
    assert list(tmp_path.glob("*.part")) == []


def test_urls_are_bounded_and_only_http(tmp_path: Path) -> None:
    for bad, says in (
        ("ftp://example.org/x.tar", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("http:///nohost", "names no host"),
        ("http://example.org/" + "a" * 3000, "at most 2048"),
    ):
        with pytest.raises(Invalid, match=says):
            fetch(bad, tmp_path)
    with serving(DATA) as served, pytest.raises(NotFound, match="404"):
        fetch(served.url + ".missing", tmp_path)


def test_private_addresses_are_refused_unless_allowed(tmp_path: Path) -> None:
    with serving(DATA) as served:
        for url in (served.url, served.url.replace("127.0.0.1", "localhost")):
            with pytest.raises(Forbidden, match="private address"):
                fetch(url, tmp_path, private_allowed=False)
        assert served.ranges == []  # nothing was sent
        # A redirect is checked like the first URL: here 127.0.0.2 stands for a private
        # address and 127.0.0.1 for a public one; the redirect to it is never followed.
        served.extra["location"] = served.url.replace("127.0.0.1", "127.0.0.2")
        redirect = served.url.rsplit("/images", 1)[0] + "/redirect"
        with pytest.raises(Forbidden, match=r"'127\.0\.0\.2' is a private address"):
            fetch(redirect, tmp_path, private_allowed=False, is_private=lambda h: h == "127.0.0.2")
        assert served.ranges == [None]  # the redirect itself, and nothing after
        served.extra["location"] = served.url
        assert fetch(redirect, tmp_path).path.read_bytes() == DATA  # followed where allowed


def test_one_download_of_a_url_at_a_time(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/x.tar"
    with (
        download._locked(tmp_path / "held.lock", url),
        pytest.raises(Conflict),
        download._locked(tmp_path / "held.lock", url),
    ):
        pass
