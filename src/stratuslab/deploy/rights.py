"""Module rights: who may read a module, push a new version of it, or run it.

SlipStream's shape (its ``Authz``): a module path has an owner, maybe a group, and rights for
the group and for the public, each of *read* (SlipStream's get), *edit* (put: push a new
version) and *run* (post: start a run of it), written ``r``, ``w`` and ``x``. The owner always
has all three, and so do an administrator and the server's own work. Edit or run without read
means nothing (a module one cannot read one cannot change or deploy knowingly), so either
implies read, as SlipStream's setters do. A member of the group has the group's rights and the
public's; anybody else the public's.

Paths are also projects: whoever owns ``apps/webapp`` (as a module, or claimed with
``stratus module rights``) holds every path under it too, with all rights and the power to
change their rights. A path nobody holds is taken by the first push (or rights change) of it,
which is refused when the nearest held path above it does not let the caller edit (404 if the
caller may not even read it, 403 if they may), or when a path below it belongs to someone else
(it would become theirs to change). A new path starts with the group and rights of the project
it is made in, private when there is none.

Modules pushed before rights existed have no ``module_paths`` row: at read time such a path is
owned, privately, by whoever pushed its version 1; the row is written the first time the path
is pushed again or its rights are changed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.db.models import GroupRecord, ModulePathRecord, ModuleRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy.references import check_path
from stratuslab.errors import Forbidden, Invalid, NotFound
from stratuslab.principal import Principal

MAX_PATH = 255  # characters of a path, as the store keeps it


class Right(StrEnum):
    READ = "r"  # see it, list it, use it in a run (as a component, parent or image)
    EDIT = "w"  # push a new version of it, or make a path under it
    RUN = "x"  # start a run of it (an application)


ALL = frozenset(Right)
NONE: frozenset[Right] = frozenset()
_WORDS = {Right.READ: "read", Right.EDIT: "edit", Right.RUN: "run"}


def parse_rights(text: str, what: str = "rights") -> frozenset[Right]:
    """``rwx``, ``r-x``, ``rx``, ``r``, ``-`` or nothing, as a set; edit or run adds read."""
    letters = set(text.replace("-", ""))
    if len(text) > 8 or not letters <= {"r", "w", "x"}:
        raise Invalid(
            f"{what} {text[:20]!r}: write them as letters of rwx (r read, w edit, x run), "
            "or - for none"
        )
    found = {Right(letter) for letter in letters}
    return frozenset(found | {Right.READ}) if found else NONE


def show_rights(rights: Collection[Right]) -> str:
    """Three characters, as ``ls -l`` shows them: ``rwx``, ``r-x``, ``---``."""
    return "".join(right.value if right in rights else "-" for right in Right)


def words(rights: Collection[Right]) -> str:
    return ", ".join(_WORDS[right] for right in Right if right in rights) or "nothing"


@dataclass(frozen=True)
class Entry:
    """Who owns one path, and the rights they gave."""

    path: str
    owner: str
    group: str | None
    group_rights: frozenset[Right]
    public_rights: frozenset[Right]
    stored: bool = True  # False: a module pushed before rights, read from its version 1

    def rights_json(self) -> dict[str, str]:
        """As the store keeps it: ``{"group": "rx", "public": "r"}``."""
        return {
            "group": "".join(r.value for r in Right if r in self.group_rights),
            "public": "".join(r.value for r in Right if r in self.public_rights),
        }


@dataclass(frozen=True)
class Standing:
    """A path as the rights see it: its own entry, and the held paths above it."""

    path: str
    own: Entry | None
    above: tuple[Entry, ...]  # nearest first

    @property
    def governing(self) -> Entry | None:
        """The entry whose rights apply: the path's own, else (for a path not yet made) the
        nearest one above it."""
        return self.own or (self.above[0] if self.above else None)

    def holds(self, caller: Principal) -> bool:
        """Whether ``caller`` has every right here and may change the rights: an
        administrator, the server, the path's owner or the owner of a project above it."""
        if caller.sees_all:
            return True
        owners = {entry.owner for entry in (self.own, *self.above) if entry is not None}
        return bool(caller.user) and caller.user in owners

    def allowed(self, caller: Principal) -> frozenset[Right]:
        if caller.is_node:
            return NONE
        governing = self.governing
        if governing is None or self.holds(caller):
            return ALL  # nobody holds it: the first to push takes it
        found = set(governing.public_rights)
        if governing.group is not None and governing.group in caller.groups:
            found |= governing.group_rights
        return frozenset(found)

    def require(self, caller: Principal, need: Right, action: str) -> frozenset[Right]:
        """The caller's rights, if they include ``need``; 404 when the caller may not read
        the path (nothing hints that it exists), 403 when they may read but not do this."""
        allowed = self.allowed(caller)
        if need in allowed:
            return allowed
        governing = self.governing
        if governing is None:  # every user may take a path nobody holds; a node may not
            raise Forbidden(f"{caller} may not {action} modules")
        if Right.READ not in allowed:
            if self.own is not None and need is not Right.EDIT:
                raise no_module(self.path)  # the answer for a module nobody pushed
            raise NotFound(
                f"you may not {action} {self.path!r}: another user holds it",
                hint="use a path of your own",
            )
        whose = (
            f"it is {governing.owner}'s"
            if governing is self.own
            else f"it is under {governing.path}, {governing.owner}'s"
        )
        raise Forbidden(
            f"you may not {action} {self.path!r}: {whose}, and you may {words(allowed)}",
            hint=f"ask {governing.owner} for {_WORDS[need]} rights (`stratus module rights`)",
        )

    def _above(self, index: int) -> Standing:
        """The standing of the ``index``-th project above this path."""
        return Standing(self.above[index].path, self.above[index], self.above[index + 1 :])

    def view(self, caller: Principal) -> dict[str, Any]:
        """Owner, group and rights as the API answers them."""
        own = self.own
        assert own is not None
        return {
            "path": self.path,
            "owner": own.owner,
            "group": own.group,
            "rights": {
                "owner": show_rights(ALL),
                "group": show_rights(own.group_rights),
                "public": show_rights(own.public_rights),
            },
            "allowed": show_rights(self.allowed(caller)),
            # Projects above that give their owners this path too; only the ones this caller
            # may read, so that a private project above a public module stays unseen.
            "projects": [
                {"path": entry.path, "owner": entry.owner}
                for index, entry in enumerate(self.above)
                if Right.READ in self._above(index).allowed(caller)
            ],
        }


def no_module(path: str) -> NotFound:
    return NotFound(f"no module {path!r}", hint="push it, or see `stratus module list`")


def ancestors(path: str) -> list[str]:
    """``a/b/c`` -> [``a/b``, ``a``]: the projects a path is in, nearest first."""
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]


# -- reading and writing entries ---------------------------------------------------------


def entries(session: Session, paths: Iterable[str], *, lock: str | None = None) -> dict[str, Entry]:
    """The entries of ``paths`` that exist: rows of ``module_paths``, else (modules pushed
    before rights) the pusher of version 1. ``lock``: a path whose row is locked for the
    transaction (PostgreSQL), so that two pushes of it number their versions one after the
    other."""
    wanted = set(paths)
    if not wanted:
        return {}
    if lock is not None:  # first, so that what is read next is what the lock holds still
        session.scalars(
            select(ModulePathRecord).where(ModulePathRecord.path == lock).with_for_update()
        ).first()
    query = select(ModulePathRecord).where(ModulePathRecord.path.in_(wanted))
    found = {row.path: _entry(row) for row in session.scalars(query)}
    missing = wanted - found.keys()
    if missing:
        legacy = select(ModuleRecord.path, ModuleRecord.owner).where(
            ModuleRecord.path.in_(missing), ModuleRecord.version == 1
        )
        for path, owner in session.execute(legacy):
            found[path] = Entry(path, owner, None, NONE, NONE, stored=False)
    return found


def all_entries(session: Session) -> dict[str, Entry]:
    """Every entry: what a listing of every module needs (one query for rows, one for
    modules pushed before rights)."""
    found = {row.path: _entry(row) for row in session.scalars(select(ModulePathRecord))}
    legacy = select(ModuleRecord.path, ModuleRecord.owner).where(
        ModuleRecord.version == 1,
        ~exists().where(ModulePathRecord.path == ModuleRecord.path),
    )
    for path, owner in session.execute(legacy):
        found[path] = Entry(path, owner, None, NONE, NONE, stored=False)
    return found


def standing_in(path: str, known: Mapping[str, Entry]) -> Standing:
    above = tuple(known[p] for p in ancestors(path) if p in known)
    return Standing(path, known.get(path), above)


def standing(session: Session, path: str, *, lock: bool = False) -> Standing:
    known = entries(session, [path, *ancestors(path)], lock=path if lock else None)
    return standing_in(path, known)


def others_below(session: Session, path: str, user: str | None) -> bool:
    """Whether a path under ``path`` belongs to someone other than ``user``."""
    under = path + "/"
    row = select(ModulePathRecord.path).where(
        ModulePathRecord.path.startswith(under, autoescape=True),
        ModulePathRecord.owner != (user or ""),
    )
    legacy = select(ModuleRecord.path).where(
        ModuleRecord.version == 1,
        ModuleRecord.path.startswith(under, autoescape=True),
        ModuleRecord.owner != (user or ""),
        ~exists().where(ModulePathRecord.path == ModuleRecord.path),
    )
    return bool(session.scalars(row.limit(1)).first() or session.scalars(legacy.limit(1)).first())


def claim(session: Session, found: Standing, caller: Principal, action: str) -> Entry:
    """The path's entry, written to the store: an existing one (made a row if it was read from
    a module pushed before rights), or a new one owned by ``caller`` if they may take it."""
    if found.own is not None:
        if not found.own.stored:
            session.add(_record(found.own))
            session.flush()
        return found.own
    found.require(caller, Right.EDIT, action)
    if not found.holds(caller) and others_below(session, found.path, caller.user):
        raise Forbidden(
            f"{found.path!r} cannot be yours: paths under it belong to other users",
            hint="use a path of your own",
        )
    project = found.governing
    entry = Entry(
        found.path,
        caller.user or "",
        project.group if project else None,
        project.group_rights if project else NONE,
        project.public_rights if project else NONE,
    )
    session.add(_record(entry))
    session.flush()
    return entry


def _entry(row: ModulePathRecord) -> Entry:
    rights = row.rights or {}
    return Entry(
        row.path,
        row.owner,
        row.group,
        parse_rights(str(rights.get("group", ""))),
        parse_rights(str(rights.get("public", ""))),
    )


def _record(entry: Entry) -> ModulePathRecord:
    return ModulePathRecord(
        path=entry.path, owner=entry.owner, group=entry.group, rights=entry.rights_json()
    )


def checked_path(path: str) -> str:
    path = path.strip("/")
    if len(path) > MAX_PATH:
        raise Invalid(f"a module path is at most {MAX_PATH} characters, not {len(path)}")
    return check_path(path)


_UNSET: Any = object()


class ModuleRights:
    """Reading and changing the owner, group and rights of module paths."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def show(self, path: str, *, caller: Principal) -> dict[str, Any]:
        path = checked_path(path)
        with session_scope(self.engine) as session:
            found = standing(session, path)
        if found.own is None or Right.READ not in found.allowed(caller):
            raise NotFound(f"no module or project {path!r}", hint="see `stratus module list`")
        return found.view(caller)

    def change(
        self,
        path: str,
        *,
        caller: Principal,
        group: str | None = _UNSET,
        group_rights: str | None = None,
        public_rights: str | None = None,
    ) -> dict[str, Any]:
        """Set the group (None or "" for none) and the group's and the public's rights of
        ``path``; what is not given stays. Only who holds the path (its owner, the owner of a
        project above it, an administrator) changes them; a path nobody holds is claimed."""
        path = checked_path(path)
        new_group = parse_rights(group_rights, "group rights") if group_rights is not None else None
        new_public = (
            parse_rights(public_rights, "public rights") if public_rights is not None else None
        )
        with session_scope(self.engine) as session:
            found = standing(session, path, lock=True)
            if found.own is not None and not found.holds(caller):
                if Right.READ not in found.allowed(caller):
                    raise NotFound(
                        f"no module or project {path!r}", hint="see `stratus module list`"
                    )
                raise Forbidden(
                    f"only {found.own.owner} or an administrator changes the rights of {path!r}"
                )
            entry = claim(session, found, caller, "claim")
            row = session.get(ModulePathRecord, path)
            assert row is not None
            if group is not _UNSET:
                row.group = self._group(session, group or None, caller)
            rights = dict(entry.rights_json())
            if new_group is not None:
                rights["group"] = "".join(r.value for r in Right if r in new_group)
            if new_public is not None:
                rights["public"] = "".join(r.value for r in Right if r in new_public)
            row.rights = rights
            session.flush()
            return standing(session, path).view(caller)

    @staticmethod
    def _group(session: Session, name: str | None, caller: Principal) -> str | None:
        """A group the caller may name: one they belong to (an administrator: any)."""
        if name is None:
            return None
        if session.get(GroupRecord, name) is None or not (caller.sees_all or name in caller.groups):
            raise NotFound(f"no group {name[:64]!r} of yours", hint="see `stratus group list`")
        return name
