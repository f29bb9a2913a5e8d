"""The ss-* tools, run as processes against the fake run server: values, keys, exit codes."""

from __future__ import annotations

import socket
import string
import subprocess
import threading
import time

import pytest

from stratuslab.deploy.agent.tools import NOBLOCK_RETRY_FOR
from tests.deploy.agent.conftest import PYTHON, Node
from tests.deploy.agent.fakeserver import FakeRun

pytestmark = pytest.mark.spawns


@pytest.fixture
def fake_run() -> FakeRun:
    return FakeRun(instances=("web.1", "db.1", "db.2"))


def test_ss_set_then_ss_get_round_trip(node: Node, fake_run: FakeRun) -> None:
    assert node.tool("ss-set", "ready", "yes please").returncode == 0
    assert fake_run.get("web.1:ready") == "yes please"
    done = node.tool("ss-get", "ready")
    assert (done.returncode, done.stdout, done.stderr) == (0, "yes please\n", "")


@pytest.mark.parametrize(
    ("key", "stored"),
    [
        ("ready", "web.1:ready"),
        ("db:ready", "db.1:ready"),
        ("db.2:ready", "db.2:ready"),
        ("ss:tags", "ss:tags"),
    ],
)
def test_keys_are_qualified_as_slipstream_did(
    node: Node, fake_run: FakeRun, key: str, stored: str
) -> None:
    assert node.tool("ss-set", key, "v").returncode == 0
    assert fake_run.set_history(stored) == ["v"]


def test_node_level_keys_stay_the_nodes(node: Node) -> None:
    assert node.tool("ss-get", "db:ids").stdout == "1,2\n"
    assert node.tool("ss-get", "ids").stdout == "1\n"  # web:ids, not web.1:ids


def test_the_environment_overrides_the_configuration_file(node: Node, fake_run: FakeRun) -> None:
    assert node.tool("ss-set", "ready", "v", SLIPSTREAM_NODE_INSTANCE_NAME="db.2").returncode == 0
    assert fake_run.set_history("db.2:ready") == ["v"]


def test_a_tool_answers_to_the_name_it_is_called_by(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("db.2:hostname", "db-2.lxd")
    link = node.root / "ss-get"
    link.symlink_to(node.agent)
    done = subprocess.run(
        [PYTHON, str(link), "db.2:hostname"],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "db-2.lxd\n")


def test_noblock_on_an_unset_key_exits_1(node: Node) -> None:
    done = node.tool("ss-get", "--noblock", "db.1:hostname")
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        "ss-get: 'db.1:hostname' is not set\n",
    )


def test_a_usage_error_exits_2_with_one_line(node: Node) -> None:
    done = node.tool("ss-get")
    assert done.returncode == 2
    assert done.stderr.startswith("ss-get: ")
    assert done.stderr.count("\n") == 1
    assert done.stderr == "ss-get: key is missing (see ss-get --help)\n"  # named once
    bogus = node.tool("ss-set", "--bogus", "a", "b")
    assert bogus.returncode == 2
    assert bogus.stderr == "ss-set: unknown option --bogus (see ss-set --help)\n"
    extra = node.tool("ss-random", "a", "b")
    assert (extra.returncode, extra.stderr) == (2, "ss-random: too many arguments: b\n")
    assert node.tool("no-such-tool").returncode == 2


def test_help_prints_the_usage_and_exits_0(node: Node) -> None:
    for flag in ("-h", "--help"):
        done = node.tool("ss-random", flag)
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.startswith("usage: ss-random [OPTIONS] ...\n")
        assert "-s, --size VALUE" in done.stdout


@pytest.mark.parametrize("verbose", ["-v", "--verbose", "-vv"])
def test_every_tool_accepts_slipstreams_verbose(
    node: Node, fake_run: FakeRun, verbose: str
) -> None:
    assert node.tool("ss-set", verbose, "ready", "v").returncode == 0
    assert node.tool("ss-get", verbose, "ready").stdout == "v\n"
    assert node.tool("ss-display", verbose, "busy").returncode == 0
    assert node.tool("ss-get-all", verbose, "web", "ready").stdout == "web.1:ready v\n"
    assert node.tool("ss-random", verbose).returncode == 0
    assert node.tool("ss-abort", verbose, "--cancel").returncode == 0
    assert fake_run.get("web.1:statecustom") == "busy"


def test_options_take_their_value_in_every_form(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("web.1:ready", "yes")
    assert node.tool("ss-get", "--timeout=5", "ready").stdout == "yes\n"
    for size in (("-s20",), ("-s", "20"), ("--size", "20"), ("--size=20",), ("-s=20",)):
        done = node.tool("ss-random", *size)
        assert (done.returncode, len(done.stdout.strip())) == (0, 20), size


def test_after_a_double_dash_come_words_even_with_a_dash(node: Node, fake_run: FakeRun) -> None:
    assert node.tool("ss-set", "--", "ready", "--not-an-option").returncode == 0
    assert fake_run.get("web.1:ready") == "--not-an-option"
    assert node.tool("ss-display", "--", "-", "starting").returncode == 0
    assert fake_run.get("web.1:statecustom") == "- starting"


def test_missing_configuration_exits_2(node: Node) -> None:
    done = node.tool("ss-get", "ready", STRATUS_AGENT_CONF=str(node.root / "absent.conf"))
    assert done.returncode == 2
    assert done.stderr == (
        f"ss-get: not configured: no server, run, node_instance, token in "
        f"{node.root / 'absent.conf'} or the environment\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ss-random", "-s", "0"), "ss-random: invalid size '0': give a positive number"),
        (("ss-random", "-s", "many"), "ss-random: invalid size 'many': give a positive number"),
        (
            ("ss-random", "--size", "0", "ready"),
            "ss-random: invalid size '0': give a positive number",
        ),
        (
            ("ss-get", "--timeout", "-1", "ready"),
            "ss-get: invalid timeout '-1': give seconds, 0 for no limit",
        ),
        (
            ("ss-set", "ready", "x" * 4097),
            "ss-set: a value is at most 4096 characters ('web.1:ready')",
        ),
    ],
)
def test_an_invalid_value_exits_3(
    node: Node, fake_run: FakeRun, args: tuple[str, ...], message: str
) -> None:
    done = node.tool(*args)
    assert done.returncode == 3, done.stderr
    assert done.stderr == message + "\n"
    assert fake_run.set_history("web.1:ready") == []


def test_an_unreachable_server_exits_4_after_retrying(node: Node) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = node.tool(
        "ss-get",
        "ready",
        SLIPSTREAM_SERVICEURL=f"http://127.0.0.1:{port}",
        STRATUS_AGENT_RETRY_FOR="1",
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 4
    assert done.stderr.startswith(f"ss-get: cannot reach http://127.0.0.1:{port}: ")
    assert 0.5 < elapsed < 5


@pytest.mark.parametrize(
    "args",
    [
        ("ss-get", "--timeout", "1", "ready"),
        ("ss-get-all", "--timeout", "1", "db", "ready"),
        ("ss-get", "--noblock", "ready"),
    ],
    ids=["ss-get --timeout", "ss-get-all --timeout", "ss-get --noblock"],
)
def test_a_tools_timeout_also_ends_retrying_a_server_that_is_down(
    node: Node, args: tuple[str, ...]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = node.tool(
        *args,
        SLIPSTREAM_SERVICEURL=f"http://127.0.0.1:{port}",
        STRATUS_AGENT_RETRY_FOR="600",  # the agent's period: the tool's own must end it first
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith(f"{args[0]}: cannot reach http://127.0.0.1:{port}: ")
    limit = NOBLOCK_RETRY_FOR if "--noblock" in args else 1
    assert limit - 0.5 < elapsed < limit + 4


def test_a_failing_server_exits_5(node: Node, fake_run: FakeRun) -> None:
    fake_run.fail["web.1:ready"] = 500
    done = node.tool("ss-get", "ready")
    assert (done.returncode, done.stderr) == (5, "ss-get: the server is having a bad day\n")


def test_503_is_retried_until_the_server_is_back(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("web.1:ready", "true")
    fake_run.fail["web.1:ready"] = 503
    threading.Timer(0.7, lambda: fake_run.fail.pop("web.1:ready")).start()
    done = node.tool("ss-get", "ready")
    assert (done.returncode, done.stdout) == (0, "true\n")
    assert sum(1 for method, path in fake_run.requests if "web.1:ready" in path) > 1


def test_a_refused_token_exits_6(node: Node) -> None:
    done = node.tool("ss-get", "ready", STRATUS_NODE_TOKEN="not-the-token")
    assert (done.returncode, done.stderr) == (6, "ss-get: this token is not valid for this run\n")


def test_a_forbidden_request_exits_6(node: Node, fake_run: FakeRun) -> None:
    fake_run.fail["db.1:ready"] = 403
    done = node.tool("ss-set", "db.1:ready", "true")
    assert (done.returncode, done.stderr) == (6, "ss-set: the server is having a bad day\n")


def test_an_unknown_key_exits_7_in_the_servers_words(node: Node) -> None:
    done = node.tool("ss-get", "db.1:pasword")
    assert (done.returncode, done.stderr) == (
        7,
        "ss-get: no parameter 'db.1:pasword' in this run\n",
    )


def test_an_aborted_run_exits_8_unless_abort_is_ignored(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("web.1:ready", "true")
    fake_run.set("ss:abort", "db.1: deployment recipe failed")
    done = node.tool("ss-get", "ready")
    assert (done.returncode, done.stderr) == (
        8,
        "ss-get: the run is aborted: db.1: deployment recipe failed\n",
    )
    assert node.tool("ss-set", "ready", "false").returncode == 8
    assert node.tool("ss-get", "--ignore-abort", "ready").stdout == "true\n"
    assert node.tool("ss-set", "--ignore-abort", "ready", "false").returncode == 0
    assert fake_run.get("web.1:ready") == "false"


def test_ss_get_times_out_with_9(node: Node) -> None:
    started = time.monotonic()
    done = node.tool("ss-get", "--timeout", "1", "db.1:hostname")
    assert (done.returncode, done.stderr) == (
        9,
        "ss-get: timed out after 1 s waiting for 'db.1:hostname'\n",
    )
    assert time.monotonic() - started < 4


def test_ss_get_returns_as_soon_as_the_value_is_set(node: Node, fake_run: FakeRun) -> None:
    with subprocess.Popen(
        [PYTHON, str(node.agent), "ss-get", "--timeout", "0", "db:hostname"],
        env=node.env,
        stdout=subprocess.PIPE,
        text=True,
    ) as waiting:
        assert fake_run.wait_until(lambda: any("db.1:hostname" in p for _, p in fake_run.requests))
        time.sleep(0.5)
        assert waiting.poll() is None
        fake_run.set("db.1:hostname", "db-1.lxd")
        set_at = time.monotonic()
        out, _ = waiting.communicate(timeout=10)
        returned_after = time.monotonic() - set_at
    assert (waiting.returncode, out) == (0, "db-1.lxd\n")
    assert returned_after < 0.5
    assert "wait=0" not in str(fake_run.requests) and "wait=60" in str(fake_run.requests)


def test_ss_get_all_prints_every_instance(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("db.1:ready", "true")
    fake_run.set("db.2:ready", "true")
    done = node.tool("ss-get-all", "db", "ready")
    assert (done.returncode, done.stdout) == (0, "db.1:ready true\ndb.2:ready true\n")
    assert node.tool("ss-get-all", "--value", "true", "db", "ready").returncode == 0


def test_ss_get_all_value_exits_1_when_one_differs(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("db.1:ready", "true")
    fake_run.set("db.2:ready", "false")
    done = node.tool("ss-get-all", "--value", "true", "db", "ready")
    assert (done.returncode, done.stdout) == (1, "db.1:ready true\ndb.2:ready false\n")
    assert done.stderr == "ss-get-all: db.2:ready not equal to 'true'\n"


def test_ss_get_all_waits_like_ss_get(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("db.1:ready", "true")
    assert node.tool("ss-get-all", "--noblock", "db", "ready").returncode == 1
    assert node.tool("ss-get-all", "--timeout", "1", "db", "ready").returncode == 9


def test_ss_random_prints_and_sets_letters_and_digits(node: Node, fake_run: FakeRun) -> None:
    fake_run.declare("db.1:password")
    done = node.tool("ss-random", "-s", "20", "db.1:password")
    value = done.stdout.strip()
    assert done.returncode == 0
    assert len(value) == 20
    assert set(value) <= set(string.ascii_letters + string.digits)
    assert fake_run.get("db.1:password") == value
    default = node.tool("ss-random").stdout.strip()
    assert len(default) == 12
    assert default != node.tool("ss-random").stdout.strip()


def test_ss_abort_raises_the_nodes_flag_and_cancel_clears_it(node: Node, fake_run: FakeRun) -> None:
    assert node.tool("ss-abort", "database", "unreachable").returncode == 0
    assert fake_run.get("web.1:abort") == "database unreachable"
    assert fake_run.get("ss:abort") == "database unreachable"
    assert node.tool("ss-abort", "--cancel").returncode == 0
    assert fake_run.get("web.1:abort") == ""
    assert fake_run.get("ss:abort") == "database unreachable"  # a run once aborted stays so


def test_ss_abort_without_a_reason_still_gives_one(node: Node, fake_run: FakeRun) -> None:
    assert node.tool("ss-abort").returncode == 0
    assert fake_run.get("ss:abort") == "aborted by ss-abort on web.1"


def test_ss_display_sets_statecustom(node: Node, fake_run: FakeRun) -> None:
    assert node.tool("ss-display", "loading", "data").returncode == 0
    assert fake_run.get("web.1:statecustom") == "loading data"


def test_ss_display_on_an_aborted_run_exits_8_unless_abort_is_ignored(
    node: Node, fake_run: FakeRun
) -> None:
    fake_run.set("ss:abort", "db.1: deployment recipe failed")
    done = node.tool("ss-display", "loading")
    assert (done.returncode, done.stderr) == (
        8,
        "ss-display: the run is aborted: db.1: deployment recipe failed\n",
    )
    assert fake_run.set_history("web.1:statecustom") == []
    assert node.tool("ss-display", "--ignore-abort", "cleaning", "up").returncode == 0
    assert fake_run.get("web.1:statecustom") == "cleaning up"


def test_ss_get_all_ignores_abort_when_asked(node: Node, fake_run: FakeRun) -> None:
    fake_run.set("db.1:ready", "true")
    fake_run.set("db.2:ready", "false")
    fake_run.set("ss:abort", "web.1: gave up")
    assert node.tool("ss-get-all", "db", "ready").returncode == 8
    done = node.tool("ss-get-all", "--ignore-abort", "db", "ready")
    assert (done.returncode, done.stdout) == (0, "db.1:ready true\ndb.2:ready false\n")
