"""The agent's dispatch (``__main__``): by the name it was called by, or its first argument."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from stratuslab.deploy.agent import __main__ as dispatch
from stratuslab.deploy.agent import install, loop
from stratuslab.deploy.agent.exits import OK, USAGE
from stratuslab.deploy.agent.tools import TOOL_NAMES


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """What the dispatch called: tools, the agent loop and install, none of them run."""
    seen: list[tuple[str, object]] = []

    def tool(name: str, argv: list[str]) -> int:
        seen.append((name, argv))
        return 42

    def agent_main(environ: Mapping[str, str]) -> int:
        seen.append(("run", None))
        return 43

    def fake_install(environ: Mapping[str, str]) -> str:
        seen.append(("install", None))
        return "installed"

    monkeypatch.setattr(dispatch, "run_tool", tool)
    monkeypatch.setattr(loop, "agent_main", agent_main)
    monkeypatch.setattr(install, "install", fake_install)
    return seen


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_a_tool_is_called_by_its_name(name: str, calls: list[tuple[str, object]]) -> None:
    assert dispatch.main([f"/usr/local/bin/{name}", "-v", "key"]) == 42
    assert calls == [(name, ["-v", "key"])]


def test_a_tool_is_named_by_the_first_argument(calls: list[tuple[str, object]]) -> None:
    assert dispatch.main(["/opt/stratus/stratus-agent.pyz", "ss-set", "k", "v"]) == 42
    assert calls == [("ss-set", ["k", "v"])]


def test_run_starts_the_agent_loop(calls: list[tuple[str, object]]) -> None:
    assert dispatch.main(["stratus-agent.pyz", "run"]) == 43
    assert calls == [("run", None)]


CONFIGURED = {
    "SLIPSTREAM_SERVICEURL": "https://10.210.0.1:8421",
    "SLIPSTREAM_DIID": "run-1",
    "SLIPSTREAM_NODE_INSTANCE_NAME": "web.1",
    "STRATUS_NODE_TOKEN": "secret",
    "STRATUS_SERVER_CA": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
}


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A node configured through the environment, as its bootstrap's file would; the path of
    the file, which does not exist."""
    conf = str(tmp_path / "no-such.conf")
    monkeypatch.setenv("STRATUS_AGENT_CONF", conf)
    for name, value in CONFIGURED.items():
        monkeypatch.setenv(name, value)
    return conf


def test_install_installs_and_says_what_it_did(
    configured: str,
    calls: list[tuple[str, object]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert dispatch.main(["stratus-agent.pyz", "install"]) == OK
    assert calls == [("install", None)]
    assert capsys.readouterr().out == "installed\n"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "STRATUS_SERVER_CA",
            "",
            "not configured: no ca in {conf} or the environment: without the site CA's "
            "certificate this node trusts no server, and sends its token to none",
        ),
        (
            "SLIPSTREAM_SERVICEURL",
            "http://10.210.0.1:8421",
            "the server http://10.210.0.1:8421 is not https://: this node sends its token only "
            "over TLS, to the server its site CA vouches for",
        ),
    ],
    ids=["no site CA", "plain http"],
)
def test_install_refuses_a_node_that_would_trust_any_server(
    configured: str,
    calls: list[tuple[str, object]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    """A user-data without the pin (or with a plain-HTTP server) starts nothing, and says why
    in the bootstrap's output."""
    monkeypatch.setenv(variable, value)
    assert dispatch.main(["stratus-agent.pyz", "install"]) == USAGE
    assert calls == []
    error = capsys.readouterr().err
    assert error == f"stratus-agent.pyz install: {message.format(conf=configured)}\n"


def test_install_tools_needs_the_zipapp(
    tmp_path: Path, calls: list[tuple[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    """From the sources (here, the server's package) there is no archive to launch tools from."""
    assert dispatch.main(["agent", "install-tools", str(tmp_path / "bin")]) == 1
    assert "not running from its zipapp" in capsys.readouterr().err
    assert not (tmp_path / "bin").exists() and calls == []


@pytest.mark.parametrize(
    "argv", [["stratus-agent.pyz"], ["stratus-agent.pyz", "run", "now"], ["x", "install-tools"]]
)
def test_anything_else_is_a_usage_error(
    argv: list[str], calls: list[tuple[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert dispatch.main(argv) == USAGE
    assert calls == []
    usage = capsys.readouterr().err
    assert usage.startswith(f"usage: {argv[0]} run | install | install-tools DIR | ss-get | ")
