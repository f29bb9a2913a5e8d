"""SlipStream's own published Python client, ``slipstream-api`` 3.71.1 (PyPI), unchanged,
against the real server on loopback: its ``Api`` logs in with a password and with an API key,
keeps the cookie in its cookie file, reads runs, their parameters and events, starts, scales
and terminates runs, logs in again on a 401, and logs out. Only its public methods are called.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import requests
from slipstream.api import Api, SlipStreamError

from stratuslab.accounts.credentials import Credentials
from stratuslab.accounts.users import Accounts
from stratuslab.db.session import engine_for
from stratuslab.principal import SERVER, Principal
from tests.deploy.realserver import Api as StratusApi
from tests.deploy.realserver import RealServer
from tests.support import wait_until

pytestmark = pytest.mark.spawns
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def alice(real_server: RealServer) -> Credentials:
    """The site's user (whose runs the site token starts) with a password; her credentials."""
    engine = engine_for(real_server.settings.database_url)
    Accounts(engine).add_user("alice", caller=SERVER, password=PASSWORD)
    return Credentials(engine)


@pytest.fixture(scope="module")
def ready_run(real_api: StratusApi, alice: Credentials) -> Iterator[str]:
    """A run of tests/deploy/apps/tools kept in Ready: its nodes declare what the tests set."""
    run = real_api.start("tools", keep_running="always")
    real_api.wait_for_state(run, "Ready")
    yield run
    real_api.terminate(run)


def slipstream(server: RealServer, tmp_path: Path, **options: object) -> Api:
    """SlipStream's client, its cookie file under ``tmp_path`` (it makes one directory)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return Api(endpoint=server.url, cookie_file=str(tmp_path / "ss" / "cookies.txt"), **options)


def listed(api: Api) -> list[str]:
    """The runs ``Api.list_deployments`` lists. It cannot run on Python 3.9 or later, whatever
    the server: its ``element_tree__iter`` evaluates ``Element.getiterator``, removed in 3.9,
    before it looks for ``iter``. So its request is made as it makes it (api.py,
    list_deployments and _xml_get), through its own session, and its items read with
    ``iter``."""
    with pytest.raises(AttributeError, match="getiterator"):
        list(api.list_deployments())
    answer = api.session.get(
        f"{api.endpoint}/run",
        headers={"Accept": "application/xml"},
        params={"activeOnly": True, "offset": 0, "limit": 20, "cloud": ""},
    )
    answer.raise_for_status()
    return [item.get("uuid") for item in ET.fromstring(answer.content).iter("item")]


def test_a_password_login_reads_runs_and_a_logout_ends_it(
    real_server: RealServer, ready_run: str, tmp_path: Path
) -> None:
    api = slipstream(real_server, tmp_path)
    assert not api.is_authenticated()
    assert api.login_internal("alice", PASSWORD).status_code == 201
    assert api.is_authenticated() and api.username == "alice"
    session = api.current_session()
    assert session is not None and session.startswith("session/")

    deployment = api.get_deployment(ready_run)
    assert deployment.id == uuid.UUID(ready_run) and deployment.status == "ready"
    assert (deployment.username, deployment.clouds, deployment.abort) == ("alice", ["local"], "")
    assert deployment.module == "tools/1"
    assert api.get_deployment_parameter(ready_run, "ss:state") == b"Ready"
    assert api.get_deployment_parameter(ready_run, "db:ids") == b"1,2"
    assert ready_run in listed(api)
    events = api.get_deployment_events(ready_run, types=["state"])
    states = [e["content"]["state"] for e in events.events]
    assert states[-4:] == ["Provisioning", "Executing", "SendingReports", "Ready"]

    # Another client of the same cookie file (the node tools share it) is logged in too.
    assert slipstream(real_server, tmp_path).current_session() == session
    api.logout()
    assert not api.is_authenticated()
    assert not slipstream(real_server, tmp_path).is_authenticated()
    with pytest.raises(requests.HTTPError) as refused:
        api.get_deployment(ready_run)
    assert refused.value.response.status_code == 401


def test_an_api_key_login_works_and_a_revoked_key_does_not(
    real_server: RealServer, ready_run: str, alice: Credentials, tmp_path: Path
) -> None:
    key = alice.create_key(caller=Principal.for_user("alice"), name="slipstream-api")
    api = slipstream(real_server, tmp_path)
    assert api.login_apikey(key["id"], key["secret"]).status_code == 201
    assert api.username == "alice"
    assert api.get_deployment(ready_run).status == "ready"
    alice.revoke_key(key["id"], caller=Principal.for_user("alice"))
    refused = slipstream(real_server, tmp_path / "again").login_apikey(key["id"], key["secret"])
    assert refused.status_code == 401
    assert refused.json()["message"] == "this API key is wrong, revoked or expired"


def test_a_client_told_to_reauthenticate_logs_in_again_on_a_401(
    real_server: RealServer, ready_run: str, alice: Credentials, tmp_path: Path
) -> None:
    """What slipstream-client's node tools do: Api(reauthenticate=True, login_creds=...)."""
    api = slipstream(
        real_server,
        tmp_path,
        reauthenticate=True,
        login_creds={"username": "alice", "password": PASSWORD},
    )
    assert api.get_deployment(ready_run).status == "ready"  # 401, login, and again
    first = api.current_session()
    alice.close_sessions_of("alice")  # every session of hers ends, on the server
    assert api.get_deployment_parameter(ready_run, "ss:state") == b"Ready"
    second = api.current_session()
    assert first and second and first != second


def test_deploy_scale_and_terminate_through_the_start_form(
    real_server: RealServer, real_api: StratusApi, alice: Credentials, tmp_path: Path
) -> None:
    real_api.push("tools")
    api = slipstream(real_server, tmp_path)
    api.login_internal("alice", PASSWORD)
    run = api.deploy(
        "tools",
        cloud={"web": "local", "db": "local"},
        multiplicity={"db": 1},
        tolerate_failures={"db": 1},
        tags=["nightly", "ci"],
        scalable=True,
    )
    assert real_api.wait_for_state(str(run), "Ready") == "Ready"
    shown = real_api.run(str(run))
    assert shown["mutable"] is True and shown["tags"] == ["nightly", "ci"]
    assert api.get_deployment_parameter(run, "db:multiplicity") == b"1"
    assert api.get_deployment(run).scalable == "true"

    assert api.add_node_instances(run, "web", 1) == ["web.2"]
    real_api.wait_for_round(str(run))
    assert api.remove_node_instances(run, "web", [1]) is True  # DELETE /run/<uuid>/web
    real_api.wait_for_round(str(run))
    assert api.get_deployment_parameter(run, "web:ids") == b"2"
    assert api.terminate(run) is True
    assert real_api.wait_for_state(str(run), "Done") == "Done"

    with pytest.raises(SlipStreamError) as refused:
        api.deploy("tools", cloud={"web": "nowhere"})
    assert "no cloud 'nowhere' at this site" in refused.value.reason
    wait_until(lambda: real_api.machines(str(run)) == [], what="the run's machines destroyed")


def test_a_cookie_of_absurd_length_is_a_401_from_the_real_server(real_server: RealServer) -> None:
    """Through uvicorn's own HTTP parser, which an in-process client skips."""
    for size in (600, 60_000, 200_000):
        cookie = {"com.sixsq.slipstream.cookie": "token=" + "a" * size}
        for path in ("/api/runs", "/run", "/run/0b9f3c1e/ss:state"):
            answer = requests.get(real_server.url + path, cookies=cookie, timeout=30)
            assert answer.status_code == 401, (size, path, answer.text[:200])
        listing = requests.put(real_server.url + "/api/session", cookies=cookie, timeout=30)
        assert listing.status_code == 200 and listing.json()["count"] == 0
