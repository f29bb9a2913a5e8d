from __future__ import annotations

import pytest

from stratuslab.deploy.states import (
    KeepRunning,
    RunState,
    after_barrier,
    cancels,
    final_state,
    keeps,
    on_abort,
    on_terminate,
    parse_keep_running,
)
from stratuslab.errors import Conflict, Invalid

S = RunState


def test_the_happy_path_through_the_barriers() -> None:
    path = [S.PROVISIONING]
    while path[-1] is not S.FINALIZING:
        path.append(after_barrier(path[-1], aborted=False, keep=False))
    assert path == [S.PROVISIONING, S.EXECUTING, S.SENDING_REPORTS, S.READY, S.FINALIZING]
    assert final_state(aborted=False, cancelled=False) is S.DONE


def test_a_kept_run_stays_in_ready() -> None:
    assert after_barrier(S.READY, aborted=False, keep=True) is S.READY


def test_an_abort_before_the_reports_goes_to_the_reports() -> None:
    for state in (S.INITIALIZING, S.PROVISIONING, S.EXECUTING):
        assert on_abort(state) is S.SENDING_REPORTS
    for state in (S.SENDING_REPORTS, S.READY, S.FINALIZING):
        assert on_abort(state) is state
    assert after_barrier(S.PROVISIONING, aborted=True, keep=False) is S.SENDING_REPORTS
    assert after_barrier(S.SENDING_REPORTS, aborted=True, keep=False) is S.FINALIZING
    assert after_barrier(S.SENDING_REPORTS, aborted=True, keep=True) is S.READY
    assert final_state(aborted=True, cancelled=False) is S.ABORTED


@pytest.mark.parametrize(
    ("policy", "aborted", "kept"),
    [
        (KeepRunning.ALWAYS, False, True),
        (KeepRunning.ALWAYS, True, True),
        (KeepRunning.NEVER, False, False),
        (KeepRunning.NEVER, True, False),
        (KeepRunning.ON_SUCCESS, False, True),
        (KeepRunning.ON_SUCCESS, True, False),
        (KeepRunning.ON_ERROR, False, False),
        (KeepRunning.ON_ERROR, True, True),
    ],
)
def test_keep_running_policies(policy: KeepRunning, aborted: bool, kept: bool) -> None:
    assert keeps(policy, aborted=aborted) is kept


def test_scalable_runs_always_stay() -> None:
    assert keeps(KeepRunning.NEVER, aborted=False, mutable=True)


def test_terminating_before_ready_cancels_and_after_finalizes() -> None:
    assert [
        cancels(s) for s in (S.INITIALIZING, S.PROVISIONING, S.EXECUTING, S.SENDING_REPORTS)
    ] == [True] * 4
    assert not cancels(S.READY)
    assert on_terminate(S.EXECUTING) is S.FINALIZING and on_terminate(S.READY) is S.FINALIZING
    assert final_state(aborted=True, cancelled=True) is S.CANCELLED
    with pytest.raises(Conflict, match="already Done"):
        on_terminate(S.DONE)


def test_only_barriers_can_be_completed() -> None:
    with pytest.raises(Conflict):
        after_barrier(S.FINALIZING, aborted=False, keep=False)


def test_policies_are_named_as_slipstream_named_them() -> None:
    assert parse_keep_running("on-error") is KeepRunning.ON_ERROR
    with pytest.raises(Invalid, match="always, on-success, on-error, never"):
        parse_keep_running("sometimes")
