"""Who is acting: a user, one node instance of one run, or the server itself.

Every service call that reads or changes something a user owns carries the acting principal, so
that the service decides what the caller may see and do; routes only say who is calling. A user
principal is made by the API's authentication (a password, an API key, a session, a
certificate, or the host-local site token, which makes an administrator); node instances prove
themselves with their run-scoped token.

The one rule every service applies (:meth:`Principal.owns`): a thing belongs to its owner, an
administrator and the server reach everything, and anybody else is told it does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    user: str | None = None  # a person (or their CI job)
    run_id: str | None = None  # with node_instance: the run a node token is valid for
    node_instance: str | None = None  # "web.2": a node of that run, through its agent
    server: bool = False  # the server's own work (orchestrator, supervisor)
    admin: bool = False  # a site administrator: sees and manages everything
    groups: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_user(
        cls, name: str, *, admin: bool = False, groups: frozenset[str] = frozenset()
    ) -> Principal:
        return cls(user=name, admin=admin, groups=groups)

    @classmethod
    def for_node(cls, run_id: str, node_instance: str) -> Principal:
        return cls(run_id=run_id, node_instance=node_instance)

    @property
    def is_node(self) -> bool:
        return self.node_instance is not None

    @property
    def sees_all(self) -> bool:
        """The server's own work and administrators see every owner's things."""
        return self.server or self.admin

    def owns(self, owner: str) -> bool:
        """Whether something owned by ``owner`` is within this caller's reach."""
        return self.sees_all or (self.user is not None and self.user == owner)

    @property
    def owner_filter(self) -> str | None:
        """The owner a listing is restricted to; None when the caller sees every owner."""
        if self.sees_all:
            return None
        return self.user or ""  # a node lists nobody's things

    def __str__(self) -> str:
        if self.server:
            return "the server"
        if self.node_instance is not None:
            return self.node_instance
        return self.user or "nobody"


SERVER = Principal(server=True)
