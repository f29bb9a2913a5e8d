"""The run state machine (SlipStream's), as pure functions of a run's facts.

::

    Initializing -> Provisioning -> Executing -> SendingReports -> Ready -> Finalizing -> Done
                                                                                        Aborted
                                                                                        Cancelled

Provisioning, Executing, SendingReports and Ready are barriers: the run moves on when every
(non-removed) node instance has posted ``complete`` in that state. An abort (the first reason
wins) sends a run that has not reached SendingReports straight there, so that reports are
still collected; an aborted run then finalizes (or waits in Ready, when the keep-running policy
keeps failed runs) and ends Aborted. A run terminated before Ready ends Cancelled; after Ready,
it finalizes and ends Done or Aborted. The store and the orchestrator apply these decisions;
nothing here does I/O.
"""

from __future__ import annotations

from enum import StrEnum

from stratuslab.deploy.agent import protocol
from stratuslab.errors import Conflict, Invalid


class RunState(StrEnum):
    """The states' names are defined once, in the protocol the node agent shares."""

    INITIALIZING = protocol.INITIALIZING
    PROVISIONING = protocol.PROVISIONING
    EXECUTING = protocol.EXECUTING
    SENDING_REPORTS = protocol.SENDING_REPORTS
    READY = protocol.READY
    FINALIZING = protocol.FINALIZING
    DONE = protocol.DONE
    ABORTED = protocol.ABORTED
    CANCELLED = protocol.CANCELLED


class KeepRunning(StrEnum):
    ALWAYS = "always"
    ON_SUCCESS = "on-success"
    ON_ERROR = "on-error"
    NEVER = "never"


BARRIERS = frozenset(RunState(name) for name in protocol.BARRIER_STATES)
FINAL = frozenset(RunState(name) for name in protocol.FINAL_STATES)
# States in which instances exist (or are being made) and nodes are working.
ACTIVE = frozenset(
    {RunState.INITIALIZING, RunState.PROVISIONING, RunState.EXECUTING, RunState.SENDING_REPORTS}
)
ORDER = tuple(RunState(name) for name in protocol.STATES)


def parse_keep_running(value: str) -> KeepRunning:
    try:
        return KeepRunning(value)
    except ValueError:
        known = ", ".join(k.value for k in KeepRunning)
        raise Invalid(f"keep-running {value!r} is not one of {known}") from None


def keeps(policy: KeepRunning, *, aborted: bool, mutable: bool = False) -> bool:
    """Whether the instances stay once the run has done its work."""
    if mutable:
        return True  # a scalable run stays in Ready until it is terminated
    if policy is KeepRunning.ALWAYS:
        return True
    if policy is KeepRunning.NEVER:
        return False
    return aborted if policy is KeepRunning.ON_ERROR else not aborted


def after_barrier(state: RunState, *, aborted: bool, keep: bool) -> RunState:
    """Where a run goes when every node instance has completed ``state``.

    Returns ``state`` itself when the run stays (a kept run in Ready).
    """
    if state not in BARRIERS:
        raise Conflict(f"{state.value} is not a state that nodes complete")
    if state is RunState.PROVISIONING:
        return RunState.SENDING_REPORTS if aborted else RunState.EXECUTING
    if state is RunState.EXECUTING:
        return RunState.SENDING_REPORTS
    if state is RunState.SENDING_REPORTS:
        if aborted:
            return RunState.READY if keep else RunState.FINALIZING
        return RunState.READY
    return RunState.READY if keep else RunState.FINALIZING


def on_abort(state: RunState) -> RunState:
    """Where a run goes when its abort flag is raised in ``state``."""
    if state in (RunState.INITIALIZING, RunState.PROVISIONING, RunState.EXECUTING):
        return RunState.SENDING_REPORTS
    return state  # reports are being sent, or the work is done: carry on


def on_terminate(state: RunState) -> RunState:
    """Where a run goes when its owner terminates it."""
    if state in FINAL:
        raise Conflict(f"the run is already {state.value}")
    return RunState.FINALIZING


def final_state(*, aborted: bool, cancelled: bool) -> RunState:
    """How a run that has finalized ends."""
    if cancelled:
        return RunState.CANCELLED
    return RunState.ABORTED if aborted else RunState.DONE


def cancels(state: RunState) -> bool:
    """Terminating in ``state`` cancels the run (it had not reached Ready)."""
    return ORDER.index(state) < ORDER.index(RunState.READY) if state in ORDER else False
