"""The module store: every push is a new immutable version, addressed as ``path`` (the newest)
or ``path/N``."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.db.models import ModuleRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy.model import Module, ModuleText, parse_module
from stratuslab.errors import NotFound

_VERSIONED = re.compile(r"^(?P<path>.+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class StoredModule:
    path: str
    version: int
    kind: str
    file: str
    text: str
    owner: str
    created_at: datetime

    def parse(self) -> Module:
        return parse_module(self.text, path=self.path, file=self.file, version=self.version)

    def summary(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "version": self.version,
            "kind": self.kind,
            "file": self.file,
            "owner": self.owner,
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

    def push(
        self, texts: Sequence[ModuleText], *, owner: str, only_changed: bool = False
    ) -> list[StoredModule]:
        """Check every module, then store each as a new version, all or none.

        With ``only_changed``, a module whose text is the same as its newest version is not
        stored again and that version is returned (what ``stratus deploy`` wants).
        """
        # Every module is checked before anything is stored.
        parsed = [parse_module(text.text, path=text.path, file=text.file) for text in texts]
        stored: list[StoredModule] = []
        with session_scope(self.engine) as session:
            for text, module in zip(texts, parsed, strict=True):
                digest = hashlib.sha256(text.text.encode()).hexdigest()
                latest = self._latest(session, text.path)
                if only_changed and latest is not None and latest.digest == digest:
                    stored.append(_stored(latest))
                    continue
                row = ModuleRecord(
                    path=text.path,
                    version=(latest.version if latest else 0) + 1,
                    kind=module.kind,
                    file=text.file,
                    text=text.text,
                    digest=digest,
                    owner=owner,
                )
                session.add(row)
                session.flush()
                stored.append(_stored(row))
        return stored

    def get(self, path: str, version: int | None = None) -> StoredModule:
        with session_scope(self.engine) as session:
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
            return _stored(row)

    def lookup(self, path: str, version: int | None) -> tuple[Module, int]:
        """For :func:`stratuslab.deploy.model.resolve`."""
        stored = self.get(path, version)
        return stored.parse(), stored.version

    def list_modules(self) -> list[dict[str, Any]]:
        """The newest version of every module, with how many versions it has."""
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
            return [{**_stored(row).summary(), "versions": versions} for row, versions in rows]

    def versions(self, path: str) -> list[StoredModule]:
        with session_scope(self.engine) as session:
            rows = session.scalars(
                select(ModuleRecord).where(ModuleRecord.path == path).order_by(ModuleRecord.version)
            ).all()
            if not rows:
                raise NotFound(f"no module {path!r}", hint="see `stratus module list`")
            return [_stored(row) for row in rows]

    @staticmethod
    def _latest(session: Session, path: str) -> ModuleRecord | None:
        return session.scalars(
            select(ModuleRecord)
            .where(ModuleRecord.path == path)
            .order_by(ModuleRecord.version.desc())
            .limit(1)
        ).first()


def _stored(row: ModuleRecord) -> StoredModule:
    return StoredModule(
        row.path, row.version, row.kind, row.file, row.text, row.owner, row.created_at
    )
