"""/api/watches refuses what it must not keep: every bound (watches per user, branches,
notification targets, values, the site's shortest polling interval) and every bad input (names,
paths, targets, URLs, NUL characters, oversized bodies) is a 4xx whose message says what is
wrong, never a 5xx, and leaves the caller's watches as they were. On both stores, with the
repository of a real git server on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stratuslab.principal import SERVER, Principal
from stratuslab.verify import watches
from tests.api.owners import client
from tests.api.watchers import MIN_EVERY_S, World, add, error, world_on
from tests.verify.gitserver import GitServer

STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
pytestmark = pytest.mark.spawns  # the git server, and the git the verifier runs


@pytest.fixture(scope="module", params=STORES)
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    git_server: GitServer,
) -> Iterator[World]:
    with world_on(request.param, tmp_path_factory.mktemp("input"), git_server) as made:
        yield made


# -- bounds and bad input ----------------------------------------------------------------------

NUL = "a\x00b"
BAD = {
    # field: value, what the message says
    "too many branches": (
        {"branches": [f"b{n}" for n in range(watches.MAX_BRANCHES + 1)]},
        "branches: List should have at most 20 items",
    ),
    "too many notify targets": (
        {"notify": [f"mailto:u{n}@example.org" for n in range(watches.MAX_NOTIFY + 1)]},
        "notify: List should have at most 20 items",
    ),
    "too many params": (
        {"params": {f"web:p{n}": "1" for n in range(watches.MAX_PARAMS + 1)}},
        "params: Dictionary should have at most 200 items",
    ),
    "a name with capitals": ({"name": "My Watch"}, "watch name 'My Watch': lowercase letters"),
    "a name starting with '-'": ({"name": "-x"}, "starting with a letter or digit"),
    "a name too long": ({"name": "a" * 65}, "name: String should have at most 64 characters"),
    "every below the site's minimum": (
        {"every_s": MIN_EVERY_S - 1},
        f"--every {MIN_EVERY_S - 1}: between {MIN_EVERY_S} and 604800 seconds",
    ),
    "every of zero": ({"every_s": 0}, "every_s: Input should be greater than or equal to 1"),
    "every over a week": ({"every_s": 604801}, "every_s: Input should be less than or equal to"),
    "every not a number": ({"every_s": "often"}, "every_s: Input should be a valid integer"),
    "a notify target neither mailto nor http": (
        {"notify": ["ftp://example.org/drop"]},
        "mailto:ADDRESS or an http(s):// URL",
    ),
    "a notify target of two addresses": (
        {"notify": ["mailto:a@example.org,b@example.org"]},
        "mailto:ADDRESS, one address",
    ),
    "a notify target javascript:": ({"notify": ["javascript:alert(1)"]}, "mailto:ADDRESS or an"),
    "a param without a node": ({"params": {"port": "81"}}, "--param 'port': NODE:NAME=VALUE"),
    "a param value over 4 KiB": ({"params": {"web:p": "x" * 4097}}, "a value of at most 4 KiB"),
    "a module outside the repository": ({"module": "../etc"}, "a module's path in the repo"),
    "a module that is absolute": ({"module": "/etc"}, "a module's path in the repository"),
    "a branch with '..'": ({"branches": ["a..b"]}, "--branch 'a..b' is not a branch name"),
    "a branch starting with '-'": ({"branches": ["-f"]}, "is not a branch name"),
    "a keep-running policy nobody has": (
        {"keep_running": "sometimes"},
        "--keep-running 'sometimes': one of always",
    ),
    "an ext:: URL": ({"repository": "ext::sh -c touch% /tmp/x"}, "ext:: is a transport"),
    "a URL starting with '-'": ({"repository": "--upload-pack=x"}, "cannot start with '-'"),
    "a URL over 2 KiB": (
        {"repository": "https://example.org/" + "a" * 2048},
        "repository: String should have at most 2048 characters",
    ),
    "an empty URL": ({"repository": "  "}, "the repository URL is empty"),
    "a deploy key that is not one": ({"deploy_key": "hunter2"}, "--deploy-key: an ssh private"),
    "a forge nobody knows": (
        {"forge": {"kind": "bitbucket", "api": "https://x.org", "repo": "a/b", "token": "t"}},
        "forge kind: 'bitbucket' is none of",
    ),
    "a field nobody knows": ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    "no module": ({"module": None}, "module: Input should be a valid string"),
    "NUL in the URL": ({"repository": f"https://example.org/{NUL}"}, "no NUL character"),
    "NUL in the module": ({"module": NUL}, "no NUL character"),
    "NUL in the name": ({"name": NUL}, "no NUL character"),
    "NUL in a branch": ({"branches": [NUL]}, "no NUL character"),
    "NUL in a target": ({"notify": [f"mailto:{NUL}@example.org"]}, "no NUL character"),
    "NUL in a param's name": ({"params": {f"web:{NUL}": "1"}}, "no NUL character"),
    "NUL in a param's value": ({"params": {"web:p": NUL}}, "no NUL character"),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_input_is_a_clear_4xx(world: World, what: str) -> None:
    change, says = BAD[what]
    body = {"repository": world.repo.git_url, "module": "apps/demo", "name": "bad"} | change
    before = world.alice.get("/api/watches").json()
    answer = world.alice.post("/api/watches", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert says in error(answer), error(answer)
    assert world.alice.get("/api/watches").json() == before


def test_the_site_minimum_is_accepted_and_a_duplicate_name_is_a_conflict(world: World) -> None:
    add(world, world.alice, "twice", every_s=MIN_EVERY_S)
    again = world.alice.post(
        "/api/watches",
        json={"repository": world.repo.http_url, "module": "other", "name": "twice"},
    )
    assert again.status_code == 409
    assert error(again) == "alice already has a watch named 'twice'"
    assert again.json()["error"]["hint"] == "give another --name"
    # Without --name, the name comes from the repository's, and clashes the same way.
    named = world.alice.post(
        "/api/watches", json={"repository": world.repo.git_url, "module": "apps/demo"}
    )
    assert named.status_code == 201 and named.json()["name"] == world.repo.name
    clash = world.alice.post(
        "/api/watches", json={"repository": world.repo.http_url, "module": "apps/demo"}
    )
    assert clash.status_code == 409


def test_a_name_taken_from_the_repository_is_one_a_watch_may_have(
    world: World, git_server: GitServer
) -> None:
    store = world.services.engine.dialect.name  # the git server serves both stores' worlds
    for repository, name in [("_Private", "private"), ("-.-", "watch")]:
        repo = git_server.create(f"{store}/{repository}")
        answer = world.bob.post(
            "/api/watches", json={"repository": repo.git_url, "module": "apps/demo"}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["name"] == name


def test_a_user_has_at_most_fifty_watches(world: World) -> None:
    services = world.services
    services.accounts.add_user("carol", caller=SERVER, password="correct horse battery")
    key = services.credentials.create_key(caller=Principal.for_user("carol"))
    carol = client(world.site.app, key["token"])
    for n in range(watches.MAX_WATCHES):
        add(world, carol, f"w{n}")
    over = carol.post(
        "/api/watches", json={"repository": world.repo.git_url, "module": "m", "name": "w50"}
    )
    assert over.status_code == 409
    assert error(over) == "carol has 50 watches, the most one user may have"
    assert "stratus watch remove" in over.json()["error"]["hint"]
    assert len(carol.get("/api/watches").json()) == watches.MAX_WATCHES
    assert carol.delete("/api/watches/w0").status_code == 200
    add(world, carol, "w50")  # one removed makes room


def test_bad_requests_to_the_other_routes_are_4xx(world: World) -> None:
    add(world, world.alice, "routes")
    for method, path, kwargs in [
        ("GET", "/api/watches/" + "a" * 65, {}),
        ("GET", "/api/watches/routes", {"params": {"owner": "o" * 65}}),
        ("GET", "/api/watches/routes/history", {"params": {"branch": "b" * 256}}),
        ("GET", "/api/watches/routes%00", {}),
        ("GET", "/api/watches/routes", {"params": {"owner": NUL}}),
        ("POST", "/api/watches/routes/run", {"json": {"commit": "c" * 65}}),
        ("POST", "/api/watches/routes/run", {"json": {"commit": NUL}}),
        ("POST", "/api/watches/routes/run", {"json": {"sha": "abc"}}),
        ("POST", "/api/watches/routes/run", {"json": {"branch": "not-followed"}}),
        ("POST", "/api/watches/routes/run", {"json": {"commit": "-x"}}),
        ("POST", "/api/watches/routes/run", {"content": b"not json"}),
        ("POST", "/api/watches", {"content": b"[1, 2]"}),
        ("POST", "/api/watches", {"content": b"{"}),
    ]:
        answer = world.alice.request(method, path, **kwargs)
        assert 400 <= answer.status_code < 500, (path, kwargs, answer.text)
        assert error(answer), answer.text


def test_an_oversized_body_is_refused_before_it_is_read(world: World) -> None:
    huge = b'{"repository": "' + b"a" * (16 * 2**20) + b'"}'
    answer = world.alice.post(
        "/api/watches", content=huge, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413 and "at most 16 MiB" in error(answer)
    too_long = {"repository": world.repo.git_url, "module": "m", "name": "long"}
    answer = world.alice.post("/api/watches", json=too_long | {"params": {"web:p": "x" * 2**20}})
    assert answer.status_code == 422  # a value over 4 KiB, in a body the server may read
