"""Fuzzing the API: whatever a client sends, no answer is a 5xx and none hangs, and no user
reaches another's things.

Schemathesis generates requests from the application's own OpenAPI description, valid ones and
ones that break it, and they are sent in-process (the ``deploy_api`` client, on the fake cloud
and both stores) with the site token or a node's token. Some path parameters are swapped for
names that exist (a live run, its nodes, a module, an instance), so that requests get past "no
such run" into the code that works on one. The bodies of SlipStream's ``/run`` resource (forms,
text values) are not in the OpenAPI description: strategies of our own cover them.

Then the same with three credentials of real accounts: bob, then alice, each with their own
names swapped in or the other's, then ada, an administrator. A user's request that names the
other's run, instance or session is answered as one naming a thing nobody has (404, or word for
word what nobody's gets), no answer to a user holds what is the other's, and after each user's
turn the other's run, parameters, events, logs, reports, instances and session are as they were.

Bounded and deterministic: a few examples per operation, ``derandomize``, no example database;
streams are asked for a tiny timeout and long-polls for none, so nothing waits. Each test
prints how many requests it sent (``pytest -s``).
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, note, reject, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from stratuslab.cloud.connectors.fake import FakeConnector
from tests.api.owners import Owner, accounts, client, settled, snapshot
from tests.cloud.marketplace.uploads import JANE, signed
from tests.deploy.support import Node, nodes, push_app, start_run

pytestmark = pytest.mark.usefixtures("fake")
# Examples per operation and generation mode: about 180 requests per store from the OpenAPI
# description and 130 examples for /run, in seconds. STRATUS_FUZZ_EXAMPLES=60 explores further.
EXAMPLES = int(os.environ.get("STRATUS_FUZZ_EXAMPLES", "3"))
STREAMS = {"/api/runs/{run_id}/watch", "/api/runs/{run_id}/logs", "/api/instances/watch"}
NOWHERE = "git://127.0.0.1:9/fuzzed.git"  # a watched repository: loopback, the discard port
BOUNDED = settings(
    derandomize=True,  # the same examples on every run: a failure here is a bug, not bad luck
    database=None,
    deadline=None,
    # No shrinking: each step is a request, and a long string takes minutes to shrink. The
    # failing request is in the report as it was sent (the curl line).
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def bounded(examples: int) -> settings:
    return settings(BOUNDED, max_examples=examples)


class Live:
    """A run in Provisioning with its nodes running: what swapped path parameters name."""

    def __init__(self, api: TestClient, fake: FakeConnector) -> None:
        push_app(api)
        run = start_run(api, mutable=True)
        self.run_id: str = run["id"]
        self.members: dict[str, Node] = nodes(api, fake, self.run_id, 3)
        self.names = {
            "run_id": self.run_id,
            "node": "web",
            "node_instance": "web.1",
            "address": "apps/demo",
            "key": "web.1:greeting",
            "ref": fake.list_instances(tags={"run": self.run_id})[0].name,
        }
        self.tokens = ["Bearer test-token", self.members["web.1"].headers["Authorization"]]
        # A Marketplace entry, so that /metadata/<identifier>/<email>/<created> finds one.
        entry = api.post("/metadata", content=signed(JANE), headers={"Accept": "application/json"})
        assert entry.status_code == 201, entry.text
        _, _, identifier, email, created = entry.headers["location"].split("/")
        self.names.update(identifier=identifier, email=email, created=created, tag="nginx")
        # A volume called as the instance is, attached to it, with a snapshot: what the volume
        # routes' {ref} and {snapshot} then name.
        volume = {"name": self.names["ref"], "size": "1GiB"}
        assert api.post("/api/volumes", json=volume).status_code == 201
        ref = f"/api/volumes/{self.names['ref']}"
        assert api.post(f"{ref}/snapshots", json={"name": "s1"}).status_code == 201
        attached = api.post(f"{ref}/attach", json={"instance": self.names["ref"]})
        assert attached.status_code == 200, attached.text
        self.names["snapshot"] = "s1"


@pytest.fixture
def live(deploy_api: TestClient, fake: FakeConnector) -> Live:
    return Live(deploy_api, fake)


class Tally:
    """How many requests a test sent."""

    def __init__(self) -> None:
        self.sent = 0


def send(client: TestClient, case: schemathesis.Case, token: str, tally: Tally) -> httpx.Response:
    """The case as the test client sends it (schemathesis speaks requests' arguments)."""
    kwargs = case.as_transport_kwargs(
        base_url="http://testserver", headers={"Authorization": token}
    )
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    elif "data" in kwargs:
        body["content"] = kwargs["data"]
    tally.sent += 1
    return client.request(
        kwargs["method"], kwargs["url"], headers=kwargs["headers"], params=kwargs["params"], **body
    )


def tame(case: schemathesis.Case, names: Mapping[str, str] | None) -> None:
    """Point some cases at what exists (``names``: path parameter -> value), and keep every
    case from waiting."""
    if names and case.path_parameters:
        for name in case.path_parameters:
            if name in names:
                case.path_parameters[name] = names[name]
    # The verifier fetches each watch added at once: nothing may leave loopback (and nothing
    # listens on this port). A repository of the wrong type stays, to be refused.
    body = case.body
    watched = body.get("repository") if isinstance(body, dict) else None
    if case.operation.path == "/api/watches" and isinstance(watched, str):
        body["repository"] = NOWHERE
    # A cloud registered is probed at once and a remote LXD enrolled: nothing may leave
    # loopback (the refusals of unreachable backends are tested in test_clouds.py).
    if case.operation.path == "/api/clouds" and isinstance(body, dict):
        body.pop("lxd", None)
        if isinstance(body.get("options"), dict):
            body["options"].pop("endpoint", None)
    if case.query is not None:
        if case.operation.path in STREAMS:
            case.query["timeout"] = 0.05  # the server's own bound is tested in test_bad_input
        if "wait" in case.query:
            case.query["wait"] = 0


def breakable(operation: dict[str, Any]) -> bool:
    """Whether a request can break the operation's description: it has a body, or a parameter
    that is more than any string (a number, a pattern, a bound). Looking for a way to break
    one that has none would only spend the time budget."""
    if "requestBody" in operation:
        return True
    for parameter in operation.get("parameters", []):
        for schema in parameter["schema"].get("anyOf", [parameter["schema"]]):
            if schema.get("type") not in ("string", "null") or {"maxLength", "pattern"} & set(
                schema
            ):
                return True
    return False


Judge = Callable[[schemathesis.Case, str, str, httpx.Response], None]


def fuzz(
    client: TestClient,
    tokens: Sequence[str],
    swaps: Mapping[str, Mapping[str, str] | None],
    tally: Tally,
    judge: Judge | None = None,
) -> None:
    """Every operation of the OpenAPI description, a few examples each, as one of ``tokens``
    with the path parameters of one of ``swaps`` (or none): no 5xx, and whatever ``judge``
    (case, swap, token, answer) asserts."""
    schema = schemathesis.openapi.from_dict(client.app.openapi())  # type: ignore[attr-defined]
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: (op.method.upper() == "DELETE", op.path, op.method),  # ends last
    )
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if breakable(operation.definition.raw):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @bounded(EXAMPLES)
            @given(
                case=operation.as_strategy(generation_mode=mode),
                swap=st.sampled_from(sorted(swaps)),
                token=st.sampled_from(list(tokens)),
            )
            def check(case: schemathesis.Case, swap: str, token: str) -> None:
                tame(case, swaps[swap])
                note(case.as_curl_command())
                try:
                    response = send(client, case, token, tally)
                except httpx.InvalidURL:
                    reject()  # a URL past what clients send (httpx stops at 64 KiB of query)
                case.validate_response(response, checks=[not_a_server_error])
                if judge is not None:
                    judge(case, swap, token, response)

            check()


def test_no_request_the_openapi_description_allows_or_breaks_gets_a_5xx(
    deploy_api: TestClient, live: Live
) -> None:
    tally = Tally()
    fuzz(deploy_api, live.tokens, {"live": live.names, "none": None}, tally)
    print(f"\nfuzzing with the site token and a node's: {tally.sent} requests")


# -- two users and an administrator ------------------------------------------------------

NAMED = ("run_id", "ref", "session_id")  # path parameters that name one owner's thing


def names_of(owner: Owner, whose: str) -> dict[str, Mapping[str, str]]:
    """The swaps naming ``owner``'s things: a parameter of theirs, or a completion of theirs
    (``POST /run/<run>/<key>``), as ``whose`` (own, other, alice, bob)."""
    names = {
        "run_id": owner.run_id,
        "node": "web",
        "node_instance": "db.1",
        "address": f"{owner.name}/demo",
        "key": "db.1:password",
        "ref": owner.ref,
        "session_id": owner.session,
    }
    return {whose: names, f"{whose}:complete": {**names, "key": "db.1:complete"}}


class Crossing:
    """Judges the answers to ``caller``'s requests: nothing of ``other``'s is reachable."""

    def __init__(self, client: TestClient, other: Owner, tally: Tally) -> None:
        self.client, self.other, self.tally = client, other, tally
        self.theirs = {
            other.run_id: str(uuid.uuid4()),
            other.ref: f"i-{secrets.token_hex(5)}",
            other.machine: f"i-{secrets.token_hex(5)}",
            other.session: str(uuid.uuid4()),
        }
        # What no answer to the caller may hold (beyond echoing a name the request gave).
        self.secrets = [*self.theirs, f"{other.name}'s secret", f"{other.name}'s recipe"]
        self.refused = 0

    def __call__(
        self, case: schemathesis.Case, swap: str, token: str, response: httpx.Response
    ) -> None:
        named = swap.startswith("other") and bool(set(NAMED) & set(case.path_parameters or {}))
        if response.status_code < 400:
            assert not named, f"{self.other.name}'s thing reached: {response.status_code}"
            leaked = [text for text in self.secrets if text in response.text]
            assert not leaked, f"the answer holds {self.other.name}'s {leaked}"
            return
        if not named:
            return
        self.refused += 1
        if response.status_code == 404:
            return
        # Refused otherwise (a malformed request): exactly as a request naming nobody's thing.
        params = case.path_parameters or {}
        kept = dict(params)
        for name in NAMED:
            if name in params:
                params[name] = self.theirs.get(params[name], params[name])
        try:
            nobodys = send(self.client, case, token, self.tally)
        finally:
            params.update(kept)
        assert (response.status_code, self.unhinted(response.text)) == (
            nobodys.status_code,
            nobodys.text,
        )

    def unhinted(self, text: str) -> str:
        for theirs, nobodys in self.theirs.items():
            text = text.replace(theirs, nobodys)
        return text


def test_fuzzing_as_two_users_and_an_administrator_crosses_no_owner(
    deploy_api: TestClient, fake: FakeConnector
) -> None:
    services = deploy_api.app.state.services  # type: ignore[attr-defined]
    keys = accounts(services)
    alice = settled("alice", client(deploy_api.app, keys["alice"]["token"]), fake)
    bob = settled("bob", client(deploy_api.app, keys["bob"]["token"]), fake)
    tally = Tally()
    counts = {}
    for caller, other in ((bob, alice), (alice, bob)):
        before = snapshot(services, fake, other)
        crossing = Crossing(deploy_api, other, tally)
        swaps = {**names_of(caller, "own"), **names_of(other, "other"), "none": None}
        started_at = tally.sent
        fuzz(deploy_api, [f"Bearer {keys[caller.name]['token']}"], swaps, tally, crossing)
        counts[caller.name] = (tally.sent - started_at, crossing.refused)
        assert snapshot(services, fake, other) == before
        assert crossing.refused > 0  # the other's names were tried
    started_at = tally.sent
    swaps = {**names_of(alice, "alice"), **names_of(bob, "bob"), "none": None}
    fuzz(deploy_api, [f"Bearer {keys['ada']['token']}"], swaps, tally)
    print(
        f"\nfuzzing as two users and an administrator: {tally.sent} requests "
        f"(bob {counts['bob'][0]}, {counts['bob'][1]} naming alice's things; "
        f"alice {counts['alice'][0]}, {counts['alice'][1]} naming bob's; "
        f"ada {tally.sent - started_at})"
    )


# -- /run, whose bodies OpenAPI does not describe ---------------------------------------

TEXT = st.text(max_size=40) | st.sampled_from(["", "\x00", "é", "1" * 25, "-1", "x" * 5000])
NUMBER = st.integers(min_value=-5, max_value=3).map(str) | st.sampled_from(
    ["10001", "1000000000", "1" * 20, "1e3", " 2", "0x10", ""]
)
FIELD = st.sampled_from(
    ["refqname", "keep-running", "tags", "mutable", "type", "n", "ids", "parameter--site"]
) | st.builds(
    "--".join,
    st.lists(
        st.sampled_from(["parameter", "node", "web", "db", "greeting", "multiplicity", ""]),
        max_size=5,
    ),
)
VALUE = {
    "refqname": st.sampled_from(["module/apps/demo", "module/apps/demo/1", "apps/demo/9", ""])
    | TEXT,
    "keep-running": st.sampled_from(["always", "never", "on-error", "on-success"]) | TEXT,
    "parameter--node--web--multiplicity": NUMBER,
    "parameter--node--db--multiplicity": NUMBER,
    "n": NUMBER,
    "ids": st.builds(",".join, st.lists(NUMBER, max_size=4)) | TEXT,
}


@st.composite
def forms(draw: Callable[..., Any]) -> bytes:
    """A form body: SlipStream's fields with values good and bad, or bytes that are no form."""
    if draw(st.integers(0, 9)) == 0:
        return bytes(draw(st.binary(max_size=200)))
    fields = draw(st.dictionaries(FIELD | st.sampled_from(sorted(VALUE)), st.just(""), max_size=6))
    pairs = [
        (field, draw(VALUE.get(field, TEXT)))
        for field in (["refqname", *fields] if draw(st.booleans()) else fields)
    ]
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def no_5xx(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text


def test_no_slipstream_form_or_value_gets_a_5xx(deploy_api: TestClient, live: Live) -> None:
    run = f"/run/{live.run_id}"

    @bounded(20 * EXAMPLES)
    @given(body=forms())
    def start(body: bytes) -> None:
        no_5xx(deploy_api.post("/run", content=body, headers=FORM))

    @bounded(13 * EXAMPLES)
    @given(
        key=st.sampled_from(["web.1:greeting", "db.1:ready", "ss:abort", "greeting", "web:ids"])
        | TEXT.filter(lambda k: "/" not in k and k not in ("", ".", "..")),
        value=st.binary(max_size=64) | TEXT.map(str.encode),
        token=st.sampled_from(live.tokens),
    )
    def set_value(key: str, value: bytes, token: str) -> None:
        path = f"{run}/{quote(key, safe='')}"
        no_5xx(deploy_api.put(path, content=value, headers={"Authorization": token}))
        no_5xx(deploy_api.get(path, params={"wait": 0}, headers={"Authorization": token}))

    @bounded(10 * EXAMPLES)
    @given(body=forms(), node=st.sampled_from(["web", "db", "web.1:complete", "x"]))
    def scale(body: bytes, node: str) -> None:
        no_5xx(deploy_api.post(f"{run}/{node}", content=body, headers=FORM))
        no_5xx(deploy_api.request("DELETE", f"{run}/{node}", content=body, headers=FORM))

    start()
    set_value()
    scale()
