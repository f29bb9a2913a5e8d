"""Who is acting: a user, one node instance of one run, or the server itself.

Every service call that reads or changes something a user owns carries the acting principal, so
that the service decides what the caller may see and do; routes only say who is calling. Users
are still one site token plus a name (the many-users issue brings accounts, groups and the
administrator flag); node instances prove themselves with their run-scoped token.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    user: str | None = None  # a person (or their CI job)
    run_id: str | None = None  # with node_instance: the run a node token is valid for
    node_instance: str | None = None  # "web.2": a node of that run, through its agent
    server: bool = False  # the server's own work (orchestrator, supervisor)

    @classmethod
    def for_user(cls, name: str) -> Principal:
        return cls(user=name)

    @classmethod
    def for_node(cls, run_id: str, node_instance: str) -> Principal:
        return cls(run_id=run_id, node_instance=node_instance)

    @property
    def is_node(self) -> bool:
        return self.node_instance is not None

    def __str__(self) -> str:
        if self.server:
            return "the server"
        if self.node_instance is not None:
            return self.node_instance
        return self.user or "nobody"


SERVER = Principal(server=True)
