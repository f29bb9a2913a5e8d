"""Node instance tokens: the secret each node instance proves itself with.

A token is valid for one node instance of one run; only its SHA-256 is kept (found through an
index, so that checking one costs the same in a run of ten node instances or ten thousand).
Removing a node instance from a run, or losing its machine, revokes its token: whatever its
agent still sends no longer counts.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine

from stratuslab.db.models import NodeInstanceRecord
from stratuslab.db.session import reading, session_scope
from stratuslab.errors import NotFound
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
        """New secrets for several node instances of one run, in one transaction."""
        tokens = {name: secrets.token_urlsafe(24) for name in node_instances}
        with session_scope(self.engine) as session:
            nodes = session.scalars(
                select(NodeInstanceRecord).where(
                    NodeInstanceRecord.run_id == run_id,
                    NodeInstanceRecord.name.in_(node_instances),
                )
            ).all()
            if len(nodes) != len(tokens):
                missing = set(tokens) - {n.name for n in nodes}
                raise NotFound(f"no node instance {sorted(missing)[0]!r} in run {run_id}")
            for node in nodes:
                node.token_hash = digest(tokens[node.name])
        return tokens

    def principal(self, run_id: str, token: str) -> Principal | None:
        """The node instance ``token`` proves, if it is valid for ``run_id``."""
        if not token or len(token) > 256:
            return None
        with reading(self.engine) as conn:
            name = conn.execute(_BY_TOKEN, {"b_run": run_id, "b_digest": digest(token)}).scalar()
        return Principal.for_node(run_id, name) if name is not None else None


_NODES = NodeInstanceRecord.__table__
_BY_TOKEN = select(_NODES.c.name).where(
    _NODES.c.run_id == bindparam("b_run"), _NODES.c.token_hash == bindparam("b_digest")
)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
