from __future__ import annotations

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
