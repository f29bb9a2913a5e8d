"""Node instance tokens: the secret each node instance proves itself with.

A token is valid for one node instance of one run; only its SHA-256 is kept (found through an
index, so that checking one costs the same in a run of ten node instances or ten thousand).
Removing a node instance from a run, or losing its machine, revokes its token: whatever its
agent still sends no longer counts. A token expires when its run reaches a final state (Done,
Aborted, Cancelled); the agent's last requests (its report in SendingReports, its completions,
its last lines of output) come before, and it leaves once the run is in Finalizing.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.engine import Engine

from stratuslab.db.models import NodeInstanceRecord, RunRecord
from stratuslab.db.session import reading, session_scope
from stratuslab.deploy.states import FINAL, RunState
from stratuslab.errors import NotFound, Unauthorized
from stratuslab.principal import Principal


class NodeTokens:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def issue(self, run_id: str, node_instance: str) -> str:
        """A new secret for one node instance of one run, replacing any earlier one."""
        token = secrets.token_urlsafe(24)
        with session_scope(self.engine) as session:
            node = session.get(NodeInstanceRecord, (run_id, node_instance))
            if node is None:
                raise NotFound(f"no node instance {node_instance!r} in run {run_id}")
            node.token_hash = digest(token)
        return token

    def issue_many(self, run_id: str, node_instances: list[str]) -> dict[str, str]:
        """New secrets for several node instances of one run, in one statement."""
        tokens = {name: secrets.token_urlsafe(24) for name in node_instances}
        with session_scope(self.engine) as session:
            done = session.connection().execute(
                _SET_TOKEN,
                [
                    {"b_run": run_id, "b_name": name, "b_digest": digest(token)}
                    for name, token in tokens.items()
                ],
            )
            if done.rowcount != len(tokens):
                raise NotFound(f"some of {len(tokens)} node instances are not in run {run_id}")
        return tokens

    def principal(self, run_id: str, token: str) -> Principal | None:
        """The node instance ``token`` proves, if it is valid for ``run_id`` (None if not: a
        token of another run, or revoked). Raises ``Unauthorized`` once the run is over."""
        if not token or len(token) > 256:
            return None
        with reading(self.engine) as conn:
            found = conn.execute(
                _BY_TOKEN, {"b_run": run_id, "b_digest": digest(token)}
            ).one_or_none()
        if found is None:
            return None
        if RunState(found.state) in FINAL:
            raise Unauthorized(
                f"the run is over ({found.state}): the token of {found.name} no longer works"
            )
        return Principal.for_node(run_id, found.name)


_NODES = cast(Table, NodeInstanceRecord.__table__)
_SET_TOKEN = (
    update(_NODES)
    .where(_NODES.c.run_id == bindparam("b_run"), _NODES.c.name == bindparam("b_name"))
    .values(token_hash=bindparam("b_digest"))
)
_RUNS = cast(Table, RunRecord.__table__)
_BY_TOKEN = (
    select(_NODES.c.name, _RUNS.c.state)
    .join(_RUNS, _RUNS.c.id == _NODES.c.run_id)
    .where(_NODES.c.run_id == bindparam("b_run"), _NODES.c.token_hash == bindparam("b_digest"))
)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
