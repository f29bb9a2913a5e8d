"""One table of how a node's keys are qualified, run through both sides of the wire.

The server (``/run/<run>/<key>`` with a node's token) and the agent's tools (``ss-get <key>``
inside the node) both qualify a key with ``deploy/agent/protocol.py``'s ``qualify``; this proves
that what each answers is the value of the same full key, on the real server with real nodes
(the localproc cloud, tests/deploy/realserver.py), in a run of tests/deploy/apps/tools (web.1-2,
db.1-3) whose values are known."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from stratuslab.deploy.agent.protocol import qualify
from tests.deploy.realserver import Api, Member

pytestmark = pytest.mark.spawns

MULTIPLICITY = {"web": 2, "db": 3}  # so that no two keys of the table hold the same value
# (the key as asked, the node instance asking, the full key it means)
TABLE = [
    ("ready", "web.2", "web.2:ready"),  # a bare name: the caller's own instance
    ("ready", "db.3", "db.3:ready"),
    ("ids", "web.1", "web:ids"),  # bare ids and multiplicity: the caller's node
    ("ids", "db.3", "db:ids"),
    ("db:ready", "db.3", "db.1:ready"),
    ("multiplicity", "db.2", "db:multiplicity"),
    ("multiplicity", "web.2", "web:multiplicity"),
    ("db:ready", "web.2", "db.1:ready"),  # node:param: instance 1
    ("db:password", "db.3", "db.1:password"),
    ("web:ready", "db.1", "web.1:ready"),
    ("db.2:ready", "web.1", "db.2:ready"),  # node.N:param: as it is
    ("db.1:password", "db.1", "db.1:password"),
    ("db.2:ids", "web.1", "db:ids"),  # node.N:ids and multiplicity: the node's
    ("db.3:multiplicity", "db.2", "db:multiplicity"),
    ("web.2:ids", "db.1", "web:ids"),
    ("ss:tags", "db.2", "ss:tags"),  # ss:x: the run global
    ("ss:url.service", "web.2", "ss:url.service"),
]
# What the run's owner sets before the table is read: every value tells its key.
VALUES = {
    **{f"{n}:ready": f"{n} ready" for n in ("web.1", "web.2", "db.1", "db.2", "db.3")},
    "db.1:password": "db.1 secret",
    "ss:tags": "nightly",
    "ss:url.service": "http://service.example",
}
NODE_INSTANCES = sorted({by for _, by, _ in TABLE})


@dataclass
class KnownRun:
    api: Api
    id: str
    params: dict[str, str | None]
    members: dict[str, Member]
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def known(real_api: Api) -> Iterator[KnownRun]:
    run_id = real_api.start("tools", keep_running="always", multiplicity=MULTIPLICITY)
    try:
        real_api.wait_for_state(run_id, "Ready")
        for key, value in VALUES.items():
            real_api.set_param(run_id, key, value)
        members = {n: real_api.member(run_id, n) for n in NODE_INSTANCES}
        tokens = {
            n: json.loads(m.read("/etc/stratus/agent.conf"))["token"] for n, m in members.items()
        }
        yield KnownRun(real_api, run_id, real_api.params(run_id), members, tokens)
    finally:
        real_api.terminate(run_id)


def test_the_known_values_tell_every_full_key_apart(known: KnownRun) -> None:
    values = [known.params[full] for _asked, _by, full in TABLE]
    assert all(values), dict(zip([full for *_, full in TABLE], values, strict=True))
    distinct = {full: known.params[full] for *_, full in TABLE}
    assert len(set(distinct.values())) == len(distinct), distinct


@pytest.mark.parametrize(("asked", "by", "full"), TABLE, ids=[f"{b}:{a}" for a, b, _ in TABLE])
def test_a_key_means_the_same_to_the_server_and_to_the_agent(
    known: KnownRun, asked: str, by: str, full: str
) -> None:
    assert qualify(asked, by) == full  # the table is the protocol's
    expected = known.params[full]

    answer = httpx.get(
        f"{known.api.server.url}/run/{known.id}/{asked}",
        headers={"Authorization": f"Bearer {known.tokens[by]}"},
        timeout=30,
    )
    assert (answer.status_code, answer.text) == (200, expected), answer.text

    done = known.members[by].tool("ss-get", asked)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{expected}\n", "")
