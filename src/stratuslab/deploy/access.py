"""Who may reach a run: the one check every run service applies before it reads or changes one.

A run belongs to its owner. An administrator and the server's own work reach every run; a node
instance reaches only the run its token was issued for; anybody else is told the run does not
exist (404, the same answer as for an id nobody has), so that no answer hints that another
user's run is there. What a node may do inside its own run is decided by the service that does
it (parameters, logs, reports).
"""

from __future__ import annotations

from typing import Any, TypeVar

from stratuslab.errors import Forbidden, NotFound
from stratuslab.principal import Principal

R = TypeVar("R")


def no_run(run_id: str) -> NotFound:
    return NotFound(f"no run {run_id[:40]!r}", hint="see `stratus run list`")


def may_reach(caller: Principal, *, run_id: str, owner: str) -> bool:
    if caller.is_node:
        return caller.run_id == run_id
    return caller.owns(owner)


def checked(run: R | None, run_id: str, caller: Principal) -> R:
    """``run`` (a record or a row with ``id`` and ``owner``) if ``caller`` may reach it."""
    found: Any = run
    if found is None or not may_reach(caller, run_id=run_id, owner=found.owner):
        raise no_run(run_id)
    return found  # type: ignore[no-any-return]


def users_only(caller: Principal, what: str) -> None:
    """What only a person (or the server) does to a run, never its nodes."""
    if caller.is_node:
        raise Forbidden(f"{caller} may not {what}")


def nodes_only(caller: Principal, what: str) -> None:
    """What only a run's nodes send (their output, their reports), or an administrator."""
    if not (caller.is_node or caller.sees_all):
        raise Forbidden(f"only a run's node instances {what}")
