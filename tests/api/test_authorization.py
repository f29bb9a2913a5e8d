"""Authorization: another user's things are not there.

Alice and bob are real accounts, each with an API key (``Authorization: Bearer``), and ada is an
administrator. Alice has an instance of her own and a live run on the fake cloud whose nodes
have set a password, printed a line and sent a report. Issue 7 measured every one of the
attempts below succeeding as bob; each is its own test here, and each asserts that bob is told
exactly what he is told for a thing nobody has (404, the same words, no hint that it exists),
and that nothing of alice's changed. Lists show bob only his own, with and without
``?all=true``. Alice can still do what bob cannot, and so can an administrator.

One world per store (building a run takes a second), shared by the tests of this module: the
attempts change nothing (that is what they prove), and what does change things comes last.
"""

from __future__ import annotations

import gzip
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from stratuslab import config
from stratuslab.accounts import COOKIE
from stratuslab.api.app import create_app
from stratuslab.cloud import clouds
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.db.session import engine_for
from stratuslab.principal import SERVER, Principal
from stratuslab.services import Services
from tests.api.owners import PASSWORD, Owner, accounts, client, settled, snapshot
from tests.api.stores import database
from tests.deploy.support import wait_until
from tests.support import environment

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class World:
    """What each test works on: alice's things, bob's, and who may ask for them."""

    services: Services
    fake: FakeConnector
    site: TestClient  # the site token: the host-local administrator ("operator")
    alice: Owner
    bob: Owner
    ada: TestClient  # an administrator's account
    bob_key: dict[str, Any]
    names: dict[str, str] = field(default_factory=dict)  # placeholder -> alice's value
    ghosts: dict[str, str] = field(default_factory=dict)  # placeholder -> nobody's

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self.services, self.fake, self.alice)


@pytest.fixture(scope="module", params=STORES)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("authz")
    namespace = f"test-{secrets.token_hex(4)}"
    with database(request.param, root) as url:
        settings = config.load(
            environment(root, STRATUS_DATABASE_URL=url, STRATUS_USER="operator")
        ).with_overrides(token="test-token", report_grace_s=1)
        clouds.record(
            engine_for(url), name="local", connector="fake", options={"namespace": namespace}
        )
        fake = FakeConnector(namespace=namespace)
        app = create_app(settings)
        try:
            with client(app, "test-token") as site:
                yield _world(app, site, fake)
        finally:
            FakeConnector.ex_reset(namespace)


def _world(app: Any, site: TestClient, fake: FakeConnector) -> World:
    services: Services = app.state.services
    keys = accounts(services)
    alice = settled("alice", client(app, keys["alice"]["token"]), fake)
    bob = settled("bob", client(app, keys["bob"]["token"]), fake)
    ghost_run = str(uuid.uuid4())
    return World(
        services=services,
        fake=fake,
        site=site,
        alice=alice,
        bob=bob,
        ada=client(app, keys["ada"]["token"]),
        bob_key=keys["bob"],
        # The order of replacement matters: the prefix is a part of the run id.
        names={
            "run": alice.run_id,
            "prefix": alice.run_id[:8],
            "machine": alice.machine,
            "ref": alice.ref,
            "name": alice.box,
        },
        ghosts={
            "run": ghost_run,
            "prefix": ghost_run[:8],
            "machine": f"i-{secrets.token_hex(5)}",
            "ref": f"i-{secrets.token_hex(5)}",
            "name": "nobodys-box",
        },
    )


# -- the attempts -----------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    method: str
    path: str  # {run}, {prefix}, {ref}, {name}, {machine}: alice's, or nobody's
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    reads: bool = False  # changes nothing: alice and an administrator may do it too

    def send(self, client: TestClient, names: dict[str, str]) -> Any:
        def filled(text: str) -> str:
            return text.format(**names)

        params = {k: filled(str(v)) for k, v in (self.params or {}).items()}
        return client.request(
            self.method,
            filled(self.path),
            json=self.json,
            content=self.content,
            params=params,
            headers=self.headers,
        )


ATTEMPTS = {
    # her instances
    "read her instance": Attempt("GET", "/api/instances/{ref}", reads=True),
    "read her instance by name": Attempt("GET", "/api/instances/{name}", reads=True),
    "read her run's machine": Attempt("GET", "/api/instances/{machine}", reads=True),
    "watch her instance": Attempt(
        "GET", "/api/instances/watch", params={"ids": "{ref}", "timeout": 0.1}, reads=True
    ),
    "exec in her instance": Attempt(
        "POST", "/api/instances/{ref}/exec", json={"command": ["id"]}, reads=True
    ),
    "stop her instance": Attempt("POST", "/api/instances/{ref}/stop"),
    "start her instance": Attempt("POST", "/api/instances/{ref}/start"),
    "delete her instance": Attempt("DELETE", "/api/instances/{ref}"),
    "delete her run's machine": Attempt("DELETE", "/api/instances/{machine}"),
    # her run, in the project's JSON API
    "read her run": Attempt("GET", "/api/runs/{run}", reads=True),
    "read her run by a prefix": Attempt("GET", "/api/runs/{prefix}", reads=True),
    "read her run's parameters": Attempt("GET", "/api/runs/{run}/params", reads=True),
    "read her run's events": Attempt("GET", "/api/runs/{run}/events", reads=True),
    "watch her run's events": Attempt(
        "GET", "/api/runs/{run}/watch", params={"timeout": 0.1}, reads=True
    ),
    "read her run's logs": Attempt("GET", "/api/runs/{run}/logs", reads=True),
    "follow her run's logs": Attempt(
        "GET", "/api/runs/{run}/logs", params={"follow": "true", "timeout": 0.1}, reads=True
    ),
    "read her node's plan": Attempt("GET", "/api/runs/{run}/nodes/db.1/plan", reads=True),
    "list her run's reports": Attempt("GET", "/api/runs/{run}/reports", reads=True),
    "download her node's report": Attempt("GET", "/api/runs/{run}/reports/db.1", reads=True),
    "read her run's JUnit report": Attempt("GET", "/api/runs/{run}/junit", reads=True),
    "terminate her run": Attempt("DELETE", "/api/runs/{run}"),
    "force her run to end": Attempt("DELETE", "/api/runs/{run}", params={"force": "true"}),
    "forge a log line": Attempt(
        "POST", "/api/runs/{run}/logs", json={"node_instance": "db.1", "lines": [{"text": "x"}]}
    ),
    "forge a report": Attempt(
        "PUT", "/api/runs/{run}/reports/db.1", content=gzip.compress(b"forged")
    ),
    "add to her run": Attempt("POST", "/api/runs/{run}/nodes/web/instances", json={"count": 1}),
    "remove from her run": Attempt(
        "DELETE", "/api/runs/{run}/nodes/web/instances", params={"ids": "2"}
    ),
    # her run, through SlipStream's /run
    "read her run's XML": Attempt("GET", "/run/{run}", reads=True),
    "read db.1:password": Attempt("GET", "/run/{run}/db.1:password", reads=True),
    "wait for her run's state": Attempt(
        "GET", "/run/{run}/ss:state", params={"wait": "0.1"}, reads=True
    ),
    "set db.1:password": Attempt("PUT", "/run/{run}/db.1:password", content=b"bob's now"),
    "set web.1's input": Attempt("PUT", "/run/{run}/web.1:greeting", content=b"hi from bob"),
    "abort her run": Attempt("PUT", "/run/{run}/ss:abort", content=b"bob says stop"),
    "raise db.1's abort flag": Attempt("PUT", "/run/{run}/db.1:abort", content=b"bob"),
    "post db.1's complete": Attempt("POST", "/run/{run}/db.1:complete"),
    "terminate her run (/run)": Attempt("DELETE", "/run/{run}"),
    "add to her run (/run)": Attempt("POST", "/run/{run}/web", content=b"n=1", headers=FORM),
    "remove from her run (/run)": Attempt(
        "DELETE", "/run/{run}/web", content=b"ids=2", headers=FORM
    ),
}
READS = [name for name, attempt in ATTEMPTS.items() if attempt.reads]


def unhinted(text: str, world: World) -> str:
    """An answer about alice's things, worded as it would be about nobody's."""
    for placeholder, value in world.names.items():
        text = text.replace(value, world.ghosts[placeholder])
    return text


@pytest.mark.parametrize("what", list(ATTEMPTS))
def test_bob_is_told_alices_things_do_not_exist(world: World, what: str) -> None:
    attempt = ATTEMPTS[what]
    before = world.snapshot()
    answer = attempt.send(world.bob.http, world.names)
    nobodys = attempt.send(world.bob.http, world.ghosts)
    assert answer.status_code == 404, answer.text
    thing = "no instance" if attempt.path.startswith("/api/instances") else "no run"
    assert thing in answer.text  # refused by the service, not a route that is not there
    # Word for word what a thing nobody has gets: no hint that hers is there.
    assert (nobodys.status_code, unhinted(answer.text, world)) == (404, nobodys.text)
    assert world.snapshot() == before


@pytest.mark.parametrize("everyone", [False, True], ids=["own", "all=true"])
def test_bob_lists_only_his_own_runs(world: World, everyone: bool) -> None:
    listed = world.bob.http.get("/api/runs", params={"all": everyone, "limit": 500}).json()
    assert [r["id"] for r in listed] == [world.bob.run_id]
    xml = ET.fromstring(world.bob.http.get("/run", params={"all": everyone}).content)
    assert [item.get("uuid") for item in xml] == [world.bob.run_id]
    assert {item.get("username") for item in xml} == {"bob"}


@pytest.mark.parametrize("everyone", [False, True], ids=["own", "all=true"])
def test_bob_lists_only_his_own_instances(world: World, everyone: bool) -> None:
    listed = world.bob.http.get("/api/instances", params={"all": everyone, "gone": True}).json()
    assert {v["owner"] for v in listed} == {"bob"}
    assert world.bob.ref in {v["id"] for v in listed}
    assert {world.alice.ref, world.alice.machine}.isdisjoint(v["id"] for v in listed)


def test_an_administrator_lists_everyones_only_when_asking(world: World) -> None:
    mine = world.ada.get("/api/runs").json()
    assert mine == []  # ada has no run of her own
    every = {r["id"]: r["owner"] for r in world.ada.get("/api/runs", params={"all": True}).json()}
    assert every == {world.alice.run_id: "alice", world.bob.run_id: "bob"}
    owners = {v["owner"] for v in world.ada.get("/api/instances", params={"all": True}).json()}
    assert owners == {"alice", "bob"}


def test_bob_may_not_act_as_alice(world: World) -> None:
    before = world.snapshot()
    answer = world.bob.http.get(
        f"/api/runs/{world.alice.run_id}", headers={"X-Stratus-User": "alice"}
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["message"] == (
        "x-stratus-user: only an administrator acts as another user"
    )
    listed = world.bob.http.get("/api/instances", headers={"X-Stratus-User": "alice"})
    assert listed.status_code == 403
    assert world.snapshot() == before


@pytest.mark.parametrize("credential", ["session cookie", "basic password", "basic key"])
def test_bob_is_refused_whatever_credential_he_presents(world: World, credential: str) -> None:
    bare = TestClient(world.bob.http.app)  # no bearer token
    if credential == "session cookie":
        login = {"href": "session-template/internal", "username": "bob", "password": PASSWORD}
        opened = bare.post("/api/session", json={"sessionTemplate": login})
        assert opened.status_code == 201 and bare.cookies.get(COOKIE)
    elif credential == "basic password":
        bare.auth = ("bob", PASSWORD)
    else:
        bare.auth = (world.bob_key["id"], world.bob_key["secret"])
    assert bare.get("/api/runs").status_code == 200  # he is logged in
    before = world.snapshot()
    for what in ("read her run's parameters", "set db.1:password", "read her instance"):
        answer = ATTEMPTS[what].send(bare, world.names)
        assert answer.status_code == 404, (what, answer.text)
    assert world.snapshot() == before


def test_the_use_of_a_key_is_recorded(world: World) -> None:
    """Keys are checked by a read that waits for no writer; their last use is still kept, to
    the minute."""
    assert world.bob.http.get("/api/runs").status_code == 200
    (key,) = world.services.credentials.list_keys(caller=Principal.for_user("bob"))
    assert key["last_used_at"] is not None and key["state"] == "live"


# -- user names are bounded wherever they enter ------------------------------------------

LONG = "a" * 10_000


@pytest.mark.parametrize(
    "name",
    [LONG, "a" * 65, "Alice", "al ice", "-bob", ""],
    ids=["10000", "65", "upper", "space", "dash", "empty"],
)
def test_a_user_name_that_is_no_name_is_refused_and_never_stored(world: World, name: str) -> None:
    if name:  # the site token naming a user that cannot be
        acting = {"X-Stratus-User": name}
        made = world.site.post("/api/instances", json={"image": "debian-12"}, headers=acting)
        assert made.status_code == 422, made.text
        assert "user name" in made.json()["error"]["message"]
        started = world.site.post("/api/runs", json={"module": "alice/demo"}, headers=acting)
        assert started.status_code == 422
    with pytest.raises(Exception, match="name"):
        world.services.accounts.add_user(name, caller=SERVER)
    login = {"href": "session-template/internal", "username": name, "password": "whatever"}
    opened = TestClient(world.site.app).post("/api/session", json={"sessionTemplate": login})
    assert opened.status_code in (401, 422)
    basic = TestClient(world.site.app).get("/api/runs", auth=(name, "whatever"))
    assert basic.status_code in (401, 422)  # 422: a header over 4096 characters
    owners = {r["owner"] for r in world.site.get("/api/runs", params={"all": True}).json()}
    owners |= {v["owner"] for v in world.site.get("/api/instances", params={"all": True}).json()}
    assert owners == {"alice", "bob"}


# -- alice still can, and so can an administrator (what changes things comes last) -------


@pytest.mark.parametrize("who", ["alice", "ada", "site token"])
@pytest.mark.parametrize("what", READS)
def test_the_owner_and_an_administrator_still_can(world: World, what: str, who: str) -> None:
    client = {"alice": world.alice.http, "ada": world.ada, "site token": world.site}[who]
    answer = ATTEMPTS[what].send(client, world.names)
    assert answer.status_code == 200, answer.text
    if what == "read db.1:password":
        assert answer.text == "alice's secret"
    if what == "download her node's report":
        assert gzip.decompress(answer.content) == b"alice's report"


def test_alice_stops_starts_and_deletes_her_instance(world: World) -> None:
    for action, state in (("stop", "stopped"), ("start", "running")):
        answer = world.alice.http.post(f"/api/instances/{world.alice.ref}/{action}")
        assert answer.status_code == 200 and answer.json()["state"] == state
    assert world.alice.http.delete(f"/api/instances/{world.alice.ref}").status_code == 200
    assert world.alice.http.get(f"/api/instances/{world.alice.ref}").json()["state"] == "gone"


def test_an_administrator_terminates_alices_run(world: World) -> None:
    answer = world.ada.delete(f"/api/runs/{world.alice.run_id}")
    assert answer.status_code == 200, answer.text
    wait_until(
        lambda: (
            world.alice.http.get(f"/api/runs/{world.alice.run_id}").json()["state"] == "Cancelled"
        ),
        what="alice's run to be cancelled",
    )
    assert world.fake.list_instances(tags={"run": world.alice.run_id}) == []
