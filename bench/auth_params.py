"""Runtime-parameter get/set under 200 concurrent long-polls, with a user's credentials on
every request, beside the site token (the "before authentication" baseline), on SQLite and
PostgreSQL.

For each store, a server process of its own with a temporary store and a recorded fake cloud
(``control_plane.Server``: no LXD, no machines). Alice is a real account (``Accounts.add_user``
on the server's store) with an API key (``Credentials.create_key``) and a session (``POST
/api/session`` with her password, SlipStream's login). She pushes ``bench/probe`` (one node
``probe``, a component with outputs ``k0``..``k<W-1>`` for the workers and ``p0``..``p<P-1>``
that nobody sets) and starts a run of it, which waits in Provisioning. Then, over loopback:

- ``--polls`` (200) threads each hold ``GET /run/<run>/probe.1:p<i>?wait=60`` with alice's API
  key, asked again on its 412; measuring starts once all are sent (and 0.5 s more) and fails if
  one answers anything else;
- ``--workers`` (8) threads, each with a kept-alive ``http.client`` connection and a key of its
  own, loop ``PUT /run/<run>/probe.1:k<w>`` (a new value) then its ``GET`` (no wait, checked),
  for ``--seconds`` (4) a turn, with each credential in turn, ``--rounds`` (2) times (the order
  reversed every other round; the first second of a turn not counted): the *site token* (the
  host-local administrator: a constant-time comparison, no store read; how every request was
  authenticated before accounts existed), alice's *API key* as bearer (the key and the account
  read on every request), her *session cookie* (the session and the account read), and for
  reference a *node token* (an agent's: one indexed read with the run's state; a node's writes
  take the batched path, so it is not a user's request).

Reported per store and credential: requests per second (GETs and PUTs completed in the counted
seconds) and their ratio to the site token's, GET and PUT p50/p99 in ms, the p99 of all, the
server's CPU time per request. Why this is fair: the same run, keys, server and client threads
for every credential, in alternation; only the credential differs. The client shares the
2-CPU machine with the server, which bounds the absolute figures: read the ratios.

The servers are stopped, the PostgreSQL database dropped and the temporary directories
(``bench/.auth-<prefix>-<store>``) removed in ``finally:``, even on Ctrl-C. From the project
root: ``.venv/bin/python bench/auth_params.py [--stores sqlite,postgresql] [--postgres-url URL]
[--polls 200] [--workers 8] [--seconds 4] [--rounds 2] [--json-only]`` (``--postgres-url``
defaults to ``STRATUS_TEST_POSTGRES_URL``; its user must be able to create databases). Results
go to stdout and bench/results/auth_params-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import control_plane
from auth_world import REQUEST_TIMEOUT, Http, prepare
from common import ROOT, BenchError, guarded, log, percentile, publish
from control_plane import Server, cpu_seconds

control_plane.PYTHON = sys.executable  # the servers run under the Python that runs this script
POLL_WAIT = 60  # seconds one long-poll is held (the server's bound)
HELD_TIMEOUT = 60.0  # for every long-poll to be sent
WARMUP = 1.0  # seconds of each turn not counted
CREDENTIALS = ("site token", "API key", "session cookie", "node token")


class Store:
    """One server on one store, alice's run on it, and the credentials that reach it."""

    def __init__(self, server: Server, polls: int, workers: int) -> None:
        self.server, self.polls, self.workers = server, polls, workers
        self.run_id = ""
        self.headers: dict[str, dict[str, str]] = {}
        self.failed: list[str] = []  # what a long-poll answered, if not 412

    def prepare(self) -> None:
        self.run_id, self.headers = prepare(self.server, self.workers, self.polls)

    @contextmanager
    def long_polls(self) -> Iterator[None]:
        """``polls`` long-polls held the whole time (alice's, with her API key)."""
        stop = threading.Event()
        held = threading.Semaphore(0)
        failed = self.failed
        connections: list[Http] = []

        def poll(index: int) -> None:
            conn = Http(self.server.port, self.headers["API key"], POLL_WAIT + REQUEST_TIMEOUT)
            connections.append(conn)
            path = f"/run/{self.run_id}/probe.1:p{index}?wait={POLL_WAIT}"
            first = True
            while not stop.is_set():
                try:
                    conn.conn.putrequest("GET", path)
                    for name, value in conn.headers.items():
                        conn.conn.putheader(name, value)
                    conn.conn.endheaders()
                    if first:
                        held.release()
                        first = False
                    resp = conn.conn.getresponse()
                    text = resp.read().decode()
                except (OSError, http.client.HTTPException) as exc:
                    if not stop.is_set():
                        failed.append(f"p{index}: {exc}")
                    return
                if resp.status != 412:
                    failed.append(f"p{index} answered {resp.status}: {text[:200]}")
                    return

        for index in range(self.polls):
            threading.Thread(target=poll, args=(index,), daemon=True).start()
        try:
            deadline = time.monotonic() + HELD_TIMEOUT
            for _ in range(self.polls):
                if not held.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise BenchError(f"not every long-poll was sent in {HELD_TIMEOUT:.0f} s")
            time.sleep(0.5)  # the server takes them up and waits
            yield
        finally:
            stop.set()
            for conn in connections:
                conn.close()  # a held poll's socket: its thread returns

    def turn(self, credential: str, seconds: float) -> dict[str, Any]:
        """Workers putting and getting with ``credential`` for ``seconds``; what they saw."""
        samples: dict[str, list[float]] = {"GET": [], "PUT": []}
        lock = threading.Lock()
        errors: list[str] = []
        start = time.monotonic()
        counted_from, until = start + WARMUP, start + WARMUP + seconds

        def work(worker: int) -> None:
            conn = Http(self.server.port, self.headers[credential])
            path = f"/run/{self.run_id}/probe.1:k{worker}"
            mine: dict[str, list[float]] = {"GET": [], "PUT": []}
            n = 0
            try:
                while (now := time.monotonic()) < until:
                    value = f"{credential[:4]}-{worker}-{n}"
                    n += 1
                    t0 = time.perf_counter()
                    status, text, _ = conn.request("PUT", path, value.encode())
                    t1 = time.perf_counter()
                    if status != 200:
                        raise BenchError(f"PUT answered {status}: {text[:200]}")
                    status, text, _ = conn.request("GET", path)
                    t2 = time.perf_counter()
                    if status != 200 or text != value:
                        raise BenchError(f"GET answered {status} {text[:200]!r}, not {value}")
                    if now >= counted_from:
                        mine["PUT"].append(t1 - t0)
                        mine["GET"].append(t2 - t1)
            except (BenchError, OSError, http.client.HTTPException) as exc:
                errors.append(f"worker {worker} ({credential}): {exc}")
            finally:
                conn.close()
                with lock:
                    for kind, found in mine.items():
                        samples[kind].extend(found)

        pid = self.server.process.pid if self.server.process else 0
        threads = [threading.Thread(target=work, args=(w,)) for w in range(self.workers)]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, counted_from - time.monotonic()))
        cpu_at = cpu_seconds(pid)
        for thread in threads:
            thread.join(seconds + WARMUP + 2 * REQUEST_TIMEOUT)
        cpu = cpu_seconds(pid) - cpu_at
        if errors or self.failed:
            raise BenchError("; ".join(errors + self.failed)[:4000])
        return {"samples": samples, "seconds": seconds, "cpu": cpu}


def figures(turns: list[dict[str, Any]]) -> dict[str, Any]:
    gets = [s for t in turns for s in t["samples"]["GET"]]
    puts = [s for t in turns for s in t["samples"]["PUT"]]
    seconds = sum(t["seconds"] for t in turns)
    requests = len(gets) + len(puts)
    if not gets or not puts:
        raise BenchError("a credential completed no request in its counted seconds")
    return {
        "requests": requests,
        "requests_per_s": requests / seconds,
        "get_p50_ms": percentile(gets, 50) * 1000,
        "get_p99_ms": percentile(gets, 99) * 1000,
        "put_p50_ms": percentile(puts, 50) * 1000,
        "put_p99_ms": percentile(puts, 99) * 1000,
        "all_p99_ms": percentile(gets + puts, 99) * 1000,
        "server_cpu_ms_per_request": sum(t["cpu"] for t in turns) / requests * 1000,
    }


def measure_store(store: Store, seconds: float, rounds: int) -> dict[str, Any]:
    store.prepare()
    turns: dict[str, list[dict[str, Any]]] = {c: [] for c in CREDENTIALS}
    with store.long_polls():
        for round_ in range(rounds):
            order = CREDENTIALS if round_ % 2 == 0 else tuple(reversed(CREDENTIALS))
            for credential in order:
                turns[credential].append(store.turn(credential, seconds))
                log(f"  round {round_ + 1}: {credential} done")
    found = {credential: figures(found) for credential, found in turns.items()}
    base = found["site token"]["requests_per_s"]
    for credential in CREDENTIALS:
        found[credential]["vs_site_token"] = found[credential]["requests_per_s"] / base
    return found


def measure(args: argparse.Namespace, prefix: str, cleanups: list[Callable[[], None]]) -> Any:
    results: dict[str, Any] = {}
    for kind in args.stores:
        log(f"{kind}: {args.polls} long-polls, {args.workers} workers, {args.seconds} s a turn")
        work = ROOT / "bench" / f".auth-{prefix}-{kind}"
        with store_url(kind, args, prefix) as url:
            server = Server(work, url)

            def stop(server: Server = server, work: Any = work) -> None:
                code = server.stop()
                log(f"cleanup: server stopped (exit {code}); removing {work.relative_to(ROOT)}")
                shutil.rmtree(work, ignore_errors=True)

            cleanups.append(stop)
            try:
                results[kind] = measure_store(
                    Store(server, args.polls, args.workers), args.seconds, args.rounds
                )
            except BenchError:
                log(f"server log (tail):\n{server.log()}")
                raise
            finally:
                cleanups.remove(stop)
                stop()  # before its database is dropped
    return results


@contextmanager
def store_url(kind: str, args: argparse.Namespace, prefix: str) -> Iterator[str | None]:
    """The server's store: its default SQLite, or a PostgreSQL database of its own."""
    if kind == "sqlite":
        yield None
        return
    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = f"bench_{prefix.replace('-', '_')}"
    admin = sqlalchemy.create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield (
                make_url(args.postgres_url).set(database=name).render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def table(results: dict[str, Any]) -> str:
    head = (
        f"{'store':<11} {'credential':<15} {'req/s':>7} {'vs site':>7} {'GET p50':>8} "
        f"{'GET p99':>8} {'PUT p50':>8} {'PUT p99':>8} {'all p99':>8} {'cpu/req':>8}"
    )
    lines = [head, f"{'':<35}{'':>8}{'(ms)':>9}{'':>36}{'(ms)':>9}"]
    for store, found in results.items():
        for credential in CREDENTIALS:
            f = found[credential]
            lines.append(
                f"{store:<11} {credential:<15} {f['requests_per_s']:>7.0f} "
                f"{f['vs_site_token']:>7.2f} {f['get_p50_ms']:>8.2f} {f['get_p99_ms']:>8.2f} "
                f"{f['put_p50_ms']:>8.2f} {f['put_p99_ms']:>8.2f} {f['all_p99_ms']:>8.2f} "
                f"{f['server_cpu_ms_per_request']:>8.2f}"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "STRATUS_TEST_POSTGRES_URL",
            "postgresql+psycopg://stratus:stratus@127.0.0.1:5432/postgres",
        ),
        help="a PostgreSQL URL whose user may create databases",
    )
    parser.add_argument("--polls", type=int, default=200, help="long-polls held (200)")
    parser.add_argument("--workers", type=int, default=8, help="threads putting and getting (8)")
    parser.add_argument("--seconds", type=float, default=4.0, help="counted seconds a turn (4)")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each credential (2)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON results")
    args = parser.parse_args()
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not set(args.stores) <= {"sqlite", "postgresql"} or not args.stores:
        parser.error("--stores: sqlite, postgresql or both")
    if not (1 <= args.polls <= 1000 and 1 <= args.workers <= 64 and args.rounds >= 1):
        parser.error("--polls 1..1000, --workers 1..64, --rounds at least 1")
    if not 0.5 <= args.seconds <= 120:
        parser.error("--seconds between 0.5 and 120")

    prefix = f"bench-{secrets.token_hex(3)}"
    started = datetime.now(UTC)
    cleanups: list[Callable[[], None]] = []

    def cleanup() -> None:
        for stop in list(cleanups):
            stop()

    status, results = guarded(
        lambda: measure(args, prefix, cleanups),
        cleanup,
        failures=(OSError, http.client.HTTPException),
    )
    if results is None:
        return status
    settings = {
        "polls": args.polls,
        "workers": args.workers,
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    return publish(
        "auth_params", started, prefix, settings, results, table, json_only=args.json_only
    )


if __name__ == "__main__":
    sys.exit(main())
