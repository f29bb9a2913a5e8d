"""The ss-* tools against the real server: run inside node instance web.1 of a real run of
tests/deploy/apps/tools (web.1, db.1, db.2), with the configuration its bootstrap wrote. Values,
keys, exit codes. What only a fake server can do (fail, be down) is in test_faults.py."""

from __future__ import annotations

import string
import time
from collections.abc import Iterator

import pytest

from tests.deploy.realserver import Api, Member

pytestmark = pytest.mark.spawns

# What the tests here set; each test starts with them unset.
KEYS = ("web.1:ready", "db.1:ready", "db.2:ready", "db.1:password", "ss:tags")
ABORTED_BY = "db.1: deployment recipe failed"


class Run:
    """A run's runtime parameters, read and set by its owner (the test's own hand)."""

    def __init__(self, api: Api, run_id: str) -> None:
        self.api, self.id = api, run_id

    def get(self, key: str) -> str:
        return self.api.params(self.id)[key] or ""

    def set(self, key: str, value: str) -> None:
        self.api.set_param(self.id, key, value, ignore_abort=True)

    def displays(self) -> list[str]:
        """Every statecustom web.1 showed, in order."""
        return self.api.displays(self.id, "web.1")


def started(api: Api) -> Run:
    """A run of the tools application, waiting in Ready with its machines."""
    run = Run(api, api.start("tools", keep_running="always"))
    api.wait_for_state(run.id, "Ready")
    return run


@pytest.fixture(scope="module")
def shared_run(real_api: Api) -> Iterator[Run]:
    run = started(real_api)
    yield run
    real_api.terminate(run.id)


@pytest.fixture
def fake_run(shared_run: Run) -> Run:
    """The module's run, with the parameters the tests set unset again."""
    for key in KEYS:
        shared_run.set(key, "")
    return shared_run


@pytest.fixture
def node(real_api: Api, fake_run: Run) -> Member:
    return real_api.member(fake_run.id, "web.1")


@pytest.fixture(scope="module")
def aborted_run(real_api: Api) -> Iterator[Run]:
    """Another run, aborted by its node db.1 once in Ready (its machines are kept)."""
    run = started(real_api)
    run.set("web.1:ready", "true")
    run.set("db.1:ready", "true")
    run.set("db.2:ready", "false")
    done = real_api.member(run.id, "db.1").tool("ss-abort", "deployment", "recipe", "failed")
    assert done.returncode == 0, done.stderr
    assert real_api.run(run.id)["abort_reason"] == ABORTED_BY
    yield run
    real_api.terminate(run.id)


@pytest.fixture
def own_run(real_api: Api) -> Iterator[Run]:
    """A run of the test's own (for what cannot be undone, an abort)."""
    run = started(real_api)
    yield run
    real_api.terminate(run.id)


def test_ss_set_then_ss_get_round_trip(node: Member, fake_run: Run) -> None:
    assert node.tool("ss-set", "ready", "yes please").returncode == 0
    assert fake_run.get("web.1:ready") == "yes please"
    done = node.tool("ss-get", "ready")
    assert (done.returncode, done.stdout, done.stderr) == (0, "yes please\n", "")


@pytest.mark.parametrize(
    ("member", "key", "stored"),
    [
        ("web.1", "ready", "web.1:ready"),
        ("db.1", "db:ready", "db.1:ready"),  # a node sets only its own: db.1 sets db:ready
        ("db.2", "db.2:ready", "db.2:ready"),
        ("web.1", "ss:tags", "ss:tags"),
    ],
)
def test_keys_are_qualified_as_slipstream_did(
    real_api: Api, fake_run: Run, member: str, key: str, stored: str
) -> None:
    assert real_api.member(fake_run.id, member).tool("ss-set", key, "v").returncode == 0
    assert fake_run.get(stored) == "v"
    assert [k for k in KEYS if fake_run.get(k)] == [stored]  # that one, and no other


def test_node_level_keys_stay_the_nodes(node: Member) -> None:
    assert node.tool("ss-get", "db:ids").stdout == "1,2\n"
    assert node.tool("ss-get", "ids").stdout == "1\n"  # web:ids, not web.1:ids


def test_the_environment_overrides_the_configuration_file(node: Member, fake_run: Run) -> None:
    fake_run.set("db.2:ready", "v")
    done = node.tool("ss-get", "ready", SLIPSTREAM_NODE_INSTANCE_NAME="db.2")
    assert (done.returncode, done.stdout) == (0, "v\n")  # db.2:ready, not web.1:ready
    # Writing is another matter: web.1's token sets only web.1's parameters.
    done = node.tool("ss-set", "ready", "v", SLIPSTREAM_NODE_INSTANCE_NAME="db.2")
    assert done.returncode == 6 and "web.1 may not set db.2:ready" in done.stderr
    assert fake_run.get("web.1:ready") == ""


def test_a_tool_answers_to_the_name_it_is_called_by(node: Member) -> None:
    assert node.run("ln", "-sf", "/opt/stratus/stratus-agent.pyz", "/root/ss-get").returncode == 0
    done = node.run("python3", "/root/ss-get", "db.2:hostname")
    assert (done.returncode, done.stdout) == (0, "127.0.0.1\n")  # the server set it


def test_the_installed_tools_are_on_a_recipes_path(node: Member) -> None:
    """What the bootstrap's `install` wrote: launchers in /usr/local/bin."""
    assert node.run("ss-set", "ready", "from the launcher").returncode == 0
    done = node.run("ss-get", "ready")
    assert (done.returncode, done.stdout) == (0, "from the launcher\n")
    assert node.read("/usr/local/bin/ss-get").startswith("#!/usr/local/bin/python3 -ES\n")


def test_noblock_on_an_unset_key_exits_1(node: Member) -> None:
    done = node.tool("ss-get", "--noblock", "db.1:pending")
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        "ss-get: 'db.1:pending' is not set\n",
    )


def test_a_usage_error_exits_2_with_one_line(node: Member) -> None:
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


def test_help_prints_the_usage_and_exits_0(node: Member) -> None:
    for flag in ("-h", "--help"):
        done = node.tool("ss-random", flag)
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.startswith("usage: ss-random [OPTIONS] ...\n")
        assert "-s, --size VALUE" in done.stdout


@pytest.mark.parametrize("verbose", ["-v", "--verbose", "-vv"])
def test_every_tool_accepts_slipstreams_verbose(node: Member, fake_run: Run, verbose: str) -> None:
    assert node.tool("ss-set", verbose, "ready", "v").returncode == 0
    assert node.tool("ss-get", verbose, "ready").stdout == "v\n"
    assert node.tool("ss-display", verbose, "busy").returncode == 0
    assert node.tool("ss-get-all", verbose, "web", "ready").stdout == "web.1:ready v\n"
    assert node.tool("ss-random", verbose).returncode == 0
    assert node.tool("ss-abort", verbose, "--cancel").returncode == 0
    assert fake_run.get("web.1:statecustom") == "busy"


def test_options_take_their_value_in_every_form(node: Member, fake_run: Run) -> None:
    fake_run.set("web.1:ready", "yes")
    assert node.tool("ss-get", "--timeout=5", "ready").stdout == "yes\n"
    for size in (("-s20",), ("-s", "20"), ("--size", "20"), ("--size=20",), ("-s=20",)):
        done = node.tool("ss-random", *size)
        assert (done.returncode, len(done.stdout.strip())) == (0, 20), size


def test_after_a_double_dash_come_words_even_with_a_dash(node: Member, fake_run: Run) -> None:
    assert node.tool("ss-set", "--", "ready", "--not-an-option").returncode == 0
    assert fake_run.get("web.1:ready") == "--not-an-option"
    assert node.tool("ss-display", "--", "-", "starting").returncode == 0
    assert fake_run.get("web.1:statecustom") == "- starting"


def test_missing_configuration_exits_2(node: Member) -> None:
    done = node.tool("ss-get", "ready", STRATUS_AGENT_CONF="/root/absent.conf")
    assert done.returncode == 2
    assert done.stderr == (
        "ss-get: not configured: no server, run, node_instance, token, ca in "
        "/root/absent.conf or the environment\n"
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
    node: Member, fake_run: Run, args: tuple[str, ...], message: str
) -> None:
    done = node.tool(*args)
    assert done.returncode == 3, done.stderr
    assert done.stderr == message + "\n"
    assert fake_run.get("web.1:ready") == ""  # nothing was set


def test_a_refused_token_exits_6(node: Member, fake_run: Run) -> None:
    done = node.tool("ss-get", "ready", STRATUS_NODE_TOKEN="not-the-token")
    assert (done.returncode, done.stderr) == (
        6,
        f"ss-get: this token is not valid for run {fake_run.id}\n",
    )


def test_a_forbidden_request_exits_6(node: Member, fake_run: Run) -> None:
    done = node.tool("ss-set", "db.1:abort", "true")  # only db.1 raises its own flag
    assert (done.returncode, done.stderr) == (
        6,
        "ss-set: web.1 may not set db.1:abort: a node sets only its own parameters and the run's\n",
    )
    assert fake_run.get("ss:abort") == ""


def test_an_unknown_key_exits_7_in_the_servers_words(node: Member) -> None:
    done = node.tool("ss-get", "db.1:pasword")
    assert (done.returncode, done.stderr) == (
        7,
        "ss-get: no parameter 'db.1:pasword' in this run\n",
    )


def test_ss_get_times_out_with_9(node: Member) -> None:
    started_at = time.monotonic()
    done = node.tool("ss-get", "--timeout", "1", "db.1:pending")
    assert (done.returncode, done.stderr) == (
        9,
        "ss-get: timed out after 1 s waiting for 'db.1:pending'\n",
    )
    assert time.monotonic() - started_at < 4


def test_ss_get_all_prints_every_instance(node: Member, fake_run: Run) -> None:
    fake_run.set("db.1:ready", "true")
    fake_run.set("db.2:ready", "true")
    done = node.tool("ss-get-all", "db", "ready")
    assert (done.returncode, done.stdout) == (0, "db.1:ready true\ndb.2:ready true\n")
    assert node.tool("ss-get-all", "--value", "true", "db", "ready").returncode == 0


def test_ss_get_all_value_exits_1_when_one_differs(node: Member, fake_run: Run) -> None:
    fake_run.set("db.1:ready", "true")
    fake_run.set("db.2:ready", "false")
    done = node.tool("ss-get-all", "--value", "true", "db", "ready")
    assert (done.returncode, done.stdout) == (1, "db.1:ready true\ndb.2:ready false\n")
    assert done.stderr == "ss-get-all: db.2:ready not equal to 'true'\n"


def test_ss_get_all_waits_like_ss_get(node: Member, fake_run: Run) -> None:
    fake_run.set("db.1:ready", "true")
    assert node.tool("ss-get-all", "--noblock", "db", "ready").returncode == 1
    assert node.tool("ss-get-all", "--timeout", "1", "db", "ready").returncode == 9


def test_ss_random_prints_and_sets_letters_and_digits(
    real_api: Api, node: Member, fake_run: Run
) -> None:
    done = real_api.member(fake_run.id, "db.1").tool("ss-random", "-s", "20", "db.1:password")
    value = done.stdout.strip()
    assert done.returncode == 0
    assert len(value) == 20
    assert set(value) <= set(string.ascii_letters + string.digits)
    assert fake_run.get("db.1:password") == value
    default = node.tool("ss-random").stdout.strip()
    assert len(default) == 12
    assert default != node.tool("ss-random").stdout.strip()


def test_ss_random_secret_keeps_the_value_from_listings_not_from_nodes(
    real_api: Api, own_run: Run
) -> None:
    node = real_api.member(own_run.id, "web.1")
    done = node.tool("ss-random", "--secret", "-s", "16", "ready")
    value = done.stdout.strip()
    assert (done.returncode, len(value)) == (0, 16), done.stderr
    assert real_api.params(own_run.id)["web.1:ready"] == "********"
    shown = real_api.http.get(f"/api/runs/{own_run.id}/params", params={"show_secrets": "true"})
    assert shown.json()["web.1:ready"] == value
    assert real_api.member(own_run.id, "db.2").tool("ss-get", "web:ready").stdout == value + "\n"
    assert node.tool("ss-set", "--secret", "ready", "another-one").returncode == 0
    assert real_api.params(own_run.id)["web.1:ready"] == "********"
    missing = node.tool("ss-random", "--secret")
    assert (missing.returncode, missing.stderr) == (
        2,
        "ss-random: --secret marks the KEY set: give one (ss-random --secret KEY)\n",
    )


def test_ss_display_sets_statecustom(node: Member, fake_run: Run) -> None:
    assert node.tool("ss-display", "loading", "data").returncode == 0
    assert fake_run.get("web.1:statecustom") == "loading data"


# What needs an aborted run: one aborted by db.1, or one of the test's own.


def test_an_aborted_run_exits_8_unless_abort_is_ignored(real_api: Api, aborted_run: Run) -> None:
    node = real_api.member(aborted_run.id, "web.1")
    done = node.tool("ss-get", "ready")
    assert (done.returncode, done.stderr) == (
        8,
        "ss-get: the run is aborted: db.1: deployment recipe failed\n",
    )
    assert node.tool("ss-set", "ready", "false").returncode == 8
    assert node.tool("ss-get", "--ignore-abort", "ready").stdout == "true\n"
    assert node.tool("ss-set", "--ignore-abort", "ready", "false").returncode == 0
    assert aborted_run.get("web.1:ready") == "false"
    aborted_run.set("web.1:ready", "true")  # as the other tests of this run expect it


def test_ss_display_on_an_aborted_run_exits_8_unless_abort_is_ignored(
    real_api: Api, aborted_run: Run
) -> None:
    node = real_api.member(aborted_run.id, "web.1")
    shown = aborted_run.displays()
    done = node.tool("ss-display", "loading")
    assert (done.returncode, done.stderr) == (
        8,
        "ss-display: the run is aborted: db.1: deployment recipe failed\n",
    )
    assert aborted_run.displays() == shown  # nothing was shown
    assert node.tool("ss-display", "--ignore-abort", "cleaning", "up").returncode == 0
    assert aborted_run.get("web.1:statecustom") == "cleaning up"


def test_ss_get_all_ignores_abort_when_asked(real_api: Api, aborted_run: Run) -> None:
    node = real_api.member(aborted_run.id, "web.1")
    assert node.tool("ss-get-all", "db", "ready").returncode == 8
    done = node.tool("ss-get-all", "--ignore-abort", "db", "ready")
    assert (done.returncode, done.stdout) == (0, "db.1:ready true\ndb.2:ready false\n")


def test_ss_abort_raises_the_nodes_flag_and_cancel_clears_it(real_api: Api, own_run: Run) -> None:
    node = real_api.member(own_run.id, "web.1")
    assert node.tool("ss-abort", "database", "unreachable").returncode == 0
    # The server names the node in the reason (a fake once kept the bare words).
    assert own_run.get("web.1:abort") == "web.1: database unreachable"
    assert own_run.get("ss:abort") == "web.1: database unreachable"
    assert node.tool("ss-abort", "--cancel").returncode == 0
    assert own_run.get("web.1:abort") == ""
    assert own_run.get("ss:abort") == "web.1: database unreachable"  # a run once aborted stays so


def test_ss_abort_without_a_reason_still_gives_one(real_api: Api, own_run: Run) -> None:
    node = real_api.member(own_run.id, "web.1")
    assert node.tool("ss-abort").returncode == 0
    # The tool's default reason, which the server names the node in again (see test above).
    assert own_run.get("ss:abort") == "web.1: aborted by ss-abort on web.1"
