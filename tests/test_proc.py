from __future__ import annotations

import time
from pathlib import Path

import pytest

from stratuslab import proc
from stratuslab.errors import BackendUnavailable, CommandFailed


@pytest.mark.spawns
def test_run_returns_output_and_streams_lines() -> None:
    seen: list[str] = []
    done = proc.run(["sh", "-c", "echo one; echo two; echo oops >&2"], on_line=seen.append)
    assert seen == ["one", "two"]
    assert done.stdout == "one\ntwo\n"
    assert done.stderr == "oops\n"


@pytest.mark.spawns
def test_a_failure_carries_command_code_and_stderr() -> None:
    with pytest.raises(CommandFailed) as caught:
        proc.run(["sh", "-c", "echo details >&2; exit 3"])
    assert caught.value.returncode == 3
    assert caught.value.command == ["sh", "-c", "echo details >&2; exit 3"]
    assert "details" in str(caught.value)


@pytest.mark.spawns
def test_a_missing_program_is_named() -> None:
    with pytest.raises(BackendUnavailable, match="`no-such-program-x` is not installed"):
        proc.run(["no-such-program-x"])


def test_unmarked_tests_may_not_spawn() -> None:
    with pytest.raises(AssertionError, match=r"mark it @pytest\.mark\.spawns"):
        proc.run(["true"])


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs: killed, it is gone or a zombie (its reaping is up
    to its parent, or to init for an orphan, whenever that gets to it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _ends(pid: int) -> bool:
    """Whether ``pid`` stops running within moments (SIGKILL is delivered asynchronously)."""
    for _ in range(100):
        if not _running(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.spawns
@pytest.mark.parametrize("streaming", [False, True], ids=["captured", "streaming"])
def test_a_command_that_never_prints_is_killed_at_its_timeout(streaming: bool) -> None:
    seen: list[str] = []
    with pytest.raises(CommandFailed, match=r"timed out after 0\.5 s") as caught:
        proc.run(
            ["sh", "-c", "echo started; echo $$ >&2; exec sleep 600"],
            timeout=0.5,
            on_line=seen.append if streaming else None,
        )
    assert caught.value.returncode == -1
    assert caught.value.stdout == "started\n"
    sleeper = int(caught.value.stderr.splitlines()[0])
    assert _ends(sleeper), "the sleep outlived its timeout"
    assert seen == (["started"] if streaming else [])


@pytest.mark.spawns
@pytest.mark.parametrize("streaming", [False, True], ids=["captured", "streaming"])
def test_a_background_child_holding_stdout_open_is_killed_with_its_parent(
    streaming: bool,
) -> None:
    """The shell exits at once, but the `sleep` it left in the background keeps stdout open:
    without a group to kill, reading stdout to its end would wait for ten minutes."""
    with pytest.raises(CommandFailed, match=r"timed out after 0\.5 s") as caught:
        proc.run(
            ["sh", "-c", "echo parent; sleep 600 & echo $! >&2; exit 0"],
            timeout=0.5,
            on_line=(lambda _line: None) if streaming else None,
        )
    assert caught.value.stdout == "parent\n"
    sleeper = int(caught.value.stderr.splitlines()[0])
    assert _ends(sleeper), "the background sleep was left behind"


@pytest.mark.spawns
def test_input_is_fed_while_lines_stream_and_a_timeout_leaves_room_to_finish() -> None:
    seen: list[str] = []
    done = proc.run(["sh", "-c", "cat; echo end"], input="a\nb\n", timeout=30, on_line=seen.append)
    assert (seen, done.returncode) == (["a", "b", "end"], 0)


@pytest.mark.spawns
def test_output_that_is_not_text_is_decoded_with_replacement_characters() -> None:
    # git prints commit messages and ref names as stored: Latin-1 bytes must not crash us.
    done = proc.run(["printf", "caf\\351 \\377"])
    assert done.stdout == "caf\ufffd \ufffd"
