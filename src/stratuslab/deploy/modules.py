"""The module store: every push is a new immutable version, addressed as ``path`` (the newest)
or ``path/N``. Who may read, push and run each path is decided here, by its rights
(``deploy/rights.py``): what a caller may not read is answered as if it did not exist."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stratuslab.db.models import ModuleRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy import rights
from stratuslab.deploy.kinds import Lookup
from stratuslab.deploy.model import Module, ModuleText, parse_module
from stratuslab.deploy.rights import ModuleRights, Right, Standing
from stratuslab.errors import Conflict, NotFound
from stratuslab.principal import Principal

_VERSIONED = re.compile(r"^(?P<path>.+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class StoredModule:
    path: str
    version: int
    kind: str
    file: str
    text: str
    pushed_by: str  # who pushed this version
    created_at: datetime
    owner: str  # who owns the path (deploy/rights.py)
    tag: str | None = None  # "git:<sha>": the commit a watch pushed it from

    def parse(self) -> Module:
        return parse_module(self.text, path=self.path, file=self.file, version=self.version)

    def summary(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "version": self.version,
            "kind": self.kind,
            "file": self.file,
            "owner": self.owner,
            "pushed_by": self.pushed_by,
            "tag": self.tag,
            "created_at": self.created_at.isoformat(),
        }


def split_address(address: str) -> tuple[str, int | None]:
    """``examples/webapp/3`` -> (``examples/webapp``, 3); ``examples/webapp`` -> (it, None)."""
    match = _VERSIONED.match(address.strip("/"))
    if match:
        return match["path"], int(match["version"])
    return address.strip("/"), None


class ModuleStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rights = ModuleRights(engine)

    def push(
        self,
        texts: Sequence[ModuleText],
        *,
        caller: Principal,
        only_changed: bool = False,
        tag: str | None = None,
    ) -> list[StoredModule]:
        """Check every module, then store each as a new version, all or none. A path nobody
        holds becomes the caller's; a new version of a held path needs edit rights on it.

        With ``only_changed``, a module whose text is the same as its newest version is not
        stored again and that version is returned (what ``stratus deploy`` wants); reading it
        is enough for that.
        """
        # Every module is checked before anything is stored.
        parsed = [parse_module(text.text, path=text.path, file=text.file) for text in texts]
        stored: list[StoredModule] = []
        try:
            with session_scope(self.engine) as session:
                for text, module in zip(texts, parsed, strict=True):
                    stored.append(self._push_one(session, text, module, caller, only_changed, tag))
        except IntegrityError:
            # Two pushes of one new path at once: the store kept the first.
            raise Conflict(
                "another push of these modules was being stored at the same moment",
                hint="push again",
            ) from None
        return stored

    def _push_one(
        self,
        session: Session,
        text: ModuleText,
        module: Module,
        caller: Principal,
        only_changed: bool,
        tag: str | None = None,
    ) -> StoredModule:
        found = rights.standing(session, text.path, lock=True)
        digest = hashlib.sha256(text.text.encode()).hexdigest()
        latest = self._latest(session, text.path)
        if only_changed and latest is not None and latest.digest == digest:
            found.require(caller, Right.READ, "push")
            return _stored(latest, found)
        found.require(caller, Right.EDIT, "push")
        entry = rights.claim(session, found, caller, "push")
        row = ModuleRecord(
            path=text.path,
            version=(latest.version if latest else 0) + 1,
            kind=module.kind,
            file=text.file,
            text=text.text,
            digest=digest,
            owner=caller.user or "",
            tag=tag,
        )
        session.add(row)
        session.flush()
        return _stored(row, Standing(text.path, entry, found.above))

    def get(
        self,
        path: str,
        version: int | None = None,
        *,
        caller: Principal,
        need: Right = Right.READ,
    ) -> StoredModule:
        """A version of a module the caller may read (and, with ``need``, run): 404 for one
        they may not read, as for one that does not exist; 403 for one they may read but not
        run."""
        with session_scope(self.engine) as session:
            found = rights.standing(session, path)
            if found.own is None or Right.READ not in found.allowed(caller):
                raise rights.no_module(path)
            found.require(caller, need, "run" if need is Right.RUN else "read")
            if version is None:
                row = self._latest(session, path)
            else:
                row = session.scalars(
                    select(ModuleRecord).where(
                        ModuleRecord.path == path, ModuleRecord.version == version
                    )
                ).first()
            if row is None:
                which = f"version {version} of " if version is not None else ""
                raise NotFound(
                    f"no {which}module {path!r}", hint="push it, or see `stratus module list`"
                )
            return _stored(row, found)

    def lookup_for(self, caller: Principal) -> Lookup:
        """For :func:`stratuslab.deploy.plan.resolve`: every module a run reaches (components,
        parents, images) must be one its caller may read."""

        def lookup(path: str, version: int | None) -> tuple[Module, int]:
            stored = self.get(path, version, caller=caller)
            return stored.parse(), stored.version

        return lookup

    def list_modules(self, *, caller: Principal) -> list[dict[str, Any]]:
        """The newest version of every module the caller may read, with how many versions it
        has, its owner, group and rights."""
        with session_scope(self.engine) as session:
            newest = (
                select(ModuleRecord.path, func.max(ModuleRecord.version).label("versions"))
                .group_by(ModuleRecord.path)
                .subquery()
            )
            rows = session.execute(
                select(ModuleRecord, newest.c.versions)
                .join(
                    newest,
                    (ModuleRecord.path == newest.c.path)
                    & (ModuleRecord.version == newest.c.versions),
                )
                .order_by(ModuleRecord.path)
            ).all()
            known = rights.all_entries(session)
        listed = []
        for row, versions in rows:
            found = rights.standing_in(row.path, known)
            if found.own is None or Right.READ not in found.allowed(caller):
                continue
            view = found.view(caller)
            listed.append(
                {
                    **_stored(row, found).summary(),
                    "versions": versions,
                    "group": view["group"],
                    "rights": view["rights"],
                    "allowed": view["allowed"],
                }
            )
        return listed

    def versions(self, path: str, *, caller: Principal) -> list[StoredModule]:
        with session_scope(self.engine) as session:
            found = rights.standing(session, path)
            if found.own is None or Right.READ not in found.allowed(caller):
                raise rights.no_module(path)
            rows = session.scalars(
                select(ModuleRecord).where(ModuleRecord.path == path).order_by(ModuleRecord.version)
            ).all()
            if not rows:
                raise rights.no_module(path)
            return [_stored(row, found) for row in rows]

    @staticmethod
    def _latest(session: Session, path: str) -> ModuleRecord | None:
        return session.scalars(
            select(ModuleRecord)
            .where(ModuleRecord.path == path)
            .order_by(ModuleRecord.version.desc())
            .limit(1)
        ).first()


def _stored(row: ModuleRecord, found: Standing) -> StoredModule:
    owner = found.own.owner if found.own is not None else row.owner
    return StoredModule(
        row.path,
        row.version,
        row.kind,
        row.file,
        row.text,
        row.owner,
        row.created_at,
        owner,
        row.tag,
    )
