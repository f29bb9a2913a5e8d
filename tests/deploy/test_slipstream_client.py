"""SlipStream's node tools (``ss-get``, ``ss-set``, ``ss-display``, ``ss-abort``, ``ss-execute``
of ``slipstream-client`` 3.71) against the real server on loopback, configured as on a
SlipStream node: a ``slipstream.context`` file, ``[contextualization]`` with ``serviceurl``,
``diid``, ``node_instance_name``, ``username`` and ``password``.

``slipstream-client`` 3.71 cannot be installed on Python 3: its ``setup.py`` exits ("requires
Python >=2.6 and <3.0"), and its code is Python 2 (``import httplib``, ``urlparse``,
``except X, ex``). Two kinds of tests, then:

- always: its HTTP exchanges replayed as its sources make them (method, URL, headers, body;
  ``lib/slipstream/SlipStreamHttpClient.py``, ``HttpClient.py``, ``Client.py``,
  ``contextualizers/dummy/LocalContextualizer.py``), through the real ``slipstream-api``
  session it builds on (``HttpClient.init_session``: ``Api(reauthenticate=True,
  login_creds=..., insecure=True)``), so that its cookie jar and its new login on a 401 are
  the real ones;
- where a Python 2.7 holds the real package (``python2.7 -m pip install --target DIR
  slipstream-client==3.71``; then ``STRATUS_TEST_SLIPSTREAM_PYTHON2=/path/to/python2.7`` and
  ``STRATUS_TEST_SLIPSTREAM_CLIENT=DIR``): its own commands, unchanged.
"""

from __future__ import annotations

import configparser
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from slipstream.api import Api

from stratuslab.accounts.credentials import Credentials
from stratuslab.accounts.users import Accounts
from stratuslab.db.session import engine_for
from stratuslab.principal import SERVER
from tests.deploy.realserver import Api as StratusApi
from tests.deploy.realserver import RealServer

pytestmark = pytest.mark.spawns
PASSWORD = "correct-horse-battery"  # no blank: ~/.netrc splits on them
PYTHON2 = os.environ.get("STRATUS_TEST_SLIPSTREAM_PYTHON2", "")
CLIENT = os.environ.get("STRATUS_TEST_SLIPSTREAM_CLIENT", "")
real_client = pytest.mark.skipif(
    not (PYTHON2 and CLIENT),
    reason="STRATUS_TEST_SLIPSTREAM_PYTHON2 and _CLIENT name no Python 2.7 with slipstream-client",
)


@pytest.fixture(scope="module")
def credentials(real_server: RealServer) -> Credentials:
    engine = engine_for(real_server.settings.database_url)
    Accounts(engine).add_user("alice", caller=SERVER, password=PASSWORD)
    return Credentials(engine)


@pytest.fixture
def run(real_api: StratusApi, credentials: Credentials) -> Iterator[str]:
    """A run of tests/deploy/apps/tools (web.1, db.1, db.2) kept in Ready, owned by alice."""
    run_id = real_api.start("tools", keep_running="always")
    real_api.wait_for_state(run_id, "Ready")
    yield run_id
    real_api.terminate(run_id)


def context(where: Path, server: RealServer, run_id: str, **fields: str) -> Path:
    """A node's slipstream.context, as SlipStream's bootstrap wrote it."""
    where.mkdir(parents=True, exist_ok=True)
    values = {
        "serviceurl": server.url,
        "diid": run_id,
        "node_instance_name": "web.1",
        "username": "alice",
        "password": PASSWORD,
        **fields,
    }
    lines = ["[contextualization]", *(f"{k} = {v}" for k, v in values.items() if v)]
    (where / "slipstream.context").write_text("\n".join(lines) + "\n")
    return where


class Node:
    """slipstream-client's node side, request for request (SlipStreamHttpClient, HttpClient)."""

    def __init__(self, folder: Path) -> None:
        parser = configparser.RawConfigParser()  # LocalContextualizer._getParser
        parser.read(folder / "slipstream.context")
        found = dict(parser.items("contextualization"))
        self.node_instance = found["node_instance_name"]
        self.run_url = f"{found['serviceurl']}/run/{found['diid']}"  # _assemble_endpoints
        creds = (
            {"username": found["username"], "password": found["password"]}
            if "username" in found
            else {}
        )
        served = urlparse(found["serviceurl"])
        self.api = Api(  # HttpClient.init_session
            endpoint=f"{served.scheme}://{served.netloc}",
            cookie_file=str(folder / ".slipstream" / "cookies.txt"),
            reauthenticate=True,
            login_creds=creds,
            insecure=True,
        )

    def call(
        self,
        method: str,
        url: str,
        body: str | None = None,
        content_type: str = "application/xml",
        accept: str = "application/xml",
    ) -> requests.Response:
        """HttpClient._call: its three headers, its body, no certificate check."""
        headers = {"Content-Type": content_type, "Accept": accept, "ss-cache-key": ""}
        return self.api.session.request(method, url, data=body, headers=headers, verify=False)

    def qualify(self, key: str) -> str:
        """Client._qualifyKey, for the keys used here."""
        if ":" in key:
            node, name = key.split(":", 1)
            return key if node == "ss" or "." in node or name == "ids" else f"{node}.1:{name}"
        return f"{self.node_instance}:{key}"

    def get(self, key: str, ignore_abort: bool = False) -> requests.Response:
        query = "?ignoreabort=true" if ignore_abort else ""
        return self.call("GET", f"{self.run_url}/{self.qualify(key)}{query}", accept="text/plain")

    def set(self, key: str, value: str) -> requests.Response:
        """setRuntimeParameter: a PUT whose Content-Type stays HttpClient's application/xml."""
        return self.call("PUT", f"{self.run_url}/{self.qualify(key)}", value, accept="text/plain")

    def cancel_abort(self) -> list[requests.Response]:
        """Client.cancel_abort: ss:abort, then the node's own flag (unset_runtime_parameter)."""
        return [
            self.call("DELETE", f"{self.run_url}/{key}?ignoreabort=true")
            for key in ("ss:abort", self.qualify("abort"))
        ]


def test_ss_get_and_ss_set_with_the_nodes_context(
    real_server: RealServer, run: str, tmp_path: Path
) -> None:
    node = Node(context(tmp_path, real_server, run))
    assert node.set("ready", "yes").status_code == 200  # web.1:ready
    got = node.get("web:ready")
    assert (got.status_code, got.text) == (200, "yes")
    assert node.get("db:ids").text == "1,2"
    assert node.get("db.2:hostname").text  # the server's facts
    assert node.get("db.1:pending").status_code == 412  # HttpClient: NotYetSetException
    assert node.get("nope").status_code == 404
    assert node.set("statecustom", "almost there").status_code == 200  # ss-display
    assert node.get("statecustom").text == "almost there"
    # The session was opened once, by the first 401; the cookie jar was saved for the next tool.
    assert (tmp_path / ".slipstream" / "cookies.txt").read_text().count("slipstream.cookie") == 1


def test_a_node_tool_logs_in_again_when_its_session_has_ended(
    real_server: RealServer, run: str, credentials: Credentials, tmp_path: Path
) -> None:
    node = Node(context(tmp_path, real_server, run))
    assert node.get("ss:state").text == "Ready"
    credentials.close_sessions_of("alice")
    assert Node(context(tmp_path, real_server, run)).get("ss:state").text == "Ready"


def test_netrc_turns_into_http_basic(
    real_server: RealServer, run: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A context without credentials: requests sends what ~/.netrc holds for the host."""
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login alice password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    node = Node(context(tmp_path / "node", real_server, run, username="", password=""))
    assert node.get("ss:state").text == "Ready"
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    assert (
        Node(context(tmp_path / "bare", real_server, run, username="")).get("ss:state").status_code
        == 401
    )


def test_ss_abort_and_its_cancel(real_server: RealServer, run: str, tmp_path: Path) -> None:
    node = Node(context(tmp_path, real_server, run))
    assert [r.status_code for r in node.cancel_abort()] == [204, 204]  # nothing raised yet
    assert node.set("abort", "disk full").status_code == 200  # ss-abort "disk full"
    refused = node.get("ready")
    assert refused.status_code == 409  # HttpClient: AbortException
    assert node.get("ss:abort", ignore_abort=True).text == "web.1: disk full"
    final = node.cancel_abort()[0]
    assert final.status_code == 409 and "an abort is final" in final.text


# -- slipstream-client itself, on Python 2.7 ---------------------------------------------------


def ss(tool: str, *args: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """SlipStream's command ``tool``, run from ``folder`` (where its slipstream.context is)
    with ``folder`` as HOME (its cookie jar is ~/.slipstream/cookies.txt)."""
    start = (
        "import runpy, site, sys; site.addsitedir(sys.argv[1]); sys.argv = sys.argv[2:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return subprocess.run(
        [PYTHON2, "-c", start, CLIENT, f"{CLIENT}/bin/{tool}", *args],
        cwd=folder,
        env={"HOME": str(folder), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@real_client
def test_slipstreams_own_node_tools(
    real_server: RealServer, real_api: StratusApi, run: str, tmp_path: Path
) -> None:
    folder = context(tmp_path, real_server, run)
    assert ss("ss-set", "ready", "yes", folder=folder).returncode == 0
    got = ss("ss-get", "web:ready", folder=folder)
    assert (got.returncode, got.stdout) == (0, "yes\n"), got.stderr
    assert ss("ss-get", "db:ids", folder=folder).stdout == "1,2\n"
    assert ss("ss-display", "almost there", folder=folder).returncode == 0
    assert real_api.params(run)["web.1:statecustom"] == "almost there"
    assert ss("ss-abort", "--cancel", folder=folder).returncode == 0  # nothing raised yet

    assert ss("ss-abort", "disk full", folder=folder).returncode == 0
    assert real_api.params(run)["ss:abort"] == "web.1: disk full"
    aborted = ss("ss-get", "ready", folder=folder)
    assert aborted.returncode == 8, aborted.stderr  # CommandBase: AbortException
    cancel = ss("ss-abort", "--cancel", folder=folder)
    assert cancel.returncode == 8 and "an abort is final" in cancel.stderr


@real_client
def test_slipstreams_own_login_and_execute(
    real_server: RealServer, real_api: StratusApi, credentials: Credentials, tmp_path: Path
) -> None:
    real_api.push("tools")
    folder = tmp_path / "user"
    folder.mkdir()
    endpoint = f"--endpoint={real_server.url}"
    login = ss("ss-login", endpoint, "-u", "alice", "-p", PASSWORD, folder=folder)
    assert login.returncode == 0, login.stderr
    started = ss(
        "ss-execute",
        endpoint,
        "--keep-running=never",
        "--scalable",
        "--parameters=web:cloudservice=local,db:multiplicity=1,db:max-provisioning-failures=1",
        "tools",
        folder=folder,
    )
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip().rsplit("/", 1)[1]
    shown = real_api.run(run_id)
    assert shown["owner"] == "alice" and shown["mutable"] is True
    assert [n["name"] for n in shown["nodes"]] == ["db.1", "web.1"]
    assert real_api.wait_for_state(run_id, "Ready") == "Ready"
    real_api.terminate(run_id)
    assert real_api.wait_for_state(run_id, "Done") == "Done"
