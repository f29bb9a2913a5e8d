"""Users and groups, managed by administrators; what a user is as a principal.

Only an administrator adds, disables or enables users and manages groups; a user reads their own
account and changes their own password. Names are lowercase DNS-like words of at most 64
characters (they become owners of instances, runs and module paths, and tags on machines). A
disabled user's credentials stop working at once: every request resolves the principal afresh.
"""

from __future__ import annotations

import re
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from stratuslab.accounts.secrets import hash_password
from stratuslab.db.models import GroupMemberRecord, GroupRecord, UserRecord
from stratuslab.db.session import reading, session_scope
from stratuslab.errors import Conflict, Forbidden, Invalid, NotFound
from stratuslab.principal import Principal

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")


def check_name(name: str, what: str = "user") -> str:
    if not NAME.match(name):
        raise Invalid(
            f"{what} name {name[:70]!r}: a lowercase letter, then up to 63 lowercase letters, "
            "digits, '.', '_' or '-'"
        )
    return name


class Accounts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- users ----------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        *,
        caller: Principal,
        email: str | None = None,
        admin: bool = False,
        password: str | None = None,
    ) -> dict[str, Any]:
        _admin_only(caller, "add users")
        check_name(name)
        if email is not None and not EMAIL.match(email):
            raise Invalid(f"email {email[:70]!r} is not an address")
        hashed = hash_password(password) if password is not None else None
        try:
            with session_scope(self.engine) as session:
                if session.get(UserRecord, name) is not None:
                    raise Conflict(f"user {name} exists already")
                session.add(UserRecord(name=name, email=email, admin=admin, password_hash=hashed))
        except IntegrityError:
            raise Conflict(f"user {name} exists already") from None
        return self.show_user(name, caller=caller)

    def list_users(self, *, caller: Principal) -> list[dict[str, Any]]:
        _admin_only(caller, "list users")
        with session_scope(self.engine) as session:
            groups = _groups_by_user(session)
            rows = session.scalars(select(UserRecord).order_by(UserRecord.name))
            return [_user_dict(row, groups.get(row.name, [])) for row in rows]

    def show_user(self, name: str, *, caller: Principal) -> dict[str, Any]:
        """A user's account, to themselves or an administrator (anyone else: not found)."""
        with session_scope(self.engine) as session:
            row = session.get(UserRecord, name) if _sees(caller, name) else None
            if row is None:
                raise NotFound(f"no user {name[:70]!r}", hint="see `stratus user list`")
            return _user_dict(row, _groups_of(session, name))

    def set_disabled(self, name: str, disabled: bool, *, caller: Principal) -> dict[str, Any]:
        _admin_only(caller, "disable or enable users")
        if disabled and caller.user == name:
            raise Conflict("an administrator does not disable their own account")
        with session_scope(self.engine) as session:
            row = _user(session, name)
            row.disabled = disabled
        return self.show_user(name, caller=caller)

    def set_password(self, name: str, password: str, *, caller: Principal) -> None:
        if not _sees(caller, name):
            raise NotFound(f"no user {name[:70]!r}")
        hashed = hash_password(password)
        with session_scope(self.engine) as session:
            _user(session, name).password_hash = hashed

    def principal(self, name: str) -> Principal | None:
        """What an enabled user is as a caller (their groups, whether administrator); None for
        a user that does not exist or is disabled."""
        with reading(self.engine) as conn:  # every request makes it: it waits for no writer
            row = conn.execute(_USER, {"b_name": name}).one_or_none()
            if row is None or row.disabled:
                return None
            groups = frozenset(conn.execute(_GROUPS_OF, {"b_name": name}).scalars())
        return Principal.for_user(name, admin=row.admin, groups=groups)

    def any_admin(self) -> bool:
        with session_scope(self.engine) as session:
            found = session.scalar(
                select(UserRecord.name).where(UserRecord.admin.is_(True)).limit(1)
            )
            return found is not None

    # -- groups ---------------------------------------------------------------------------

    def add_group(self, name: str, *, caller: Principal, description: str = "") -> dict[str, Any]:
        _admin_only(caller, "add groups")
        check_name(name, "group")
        if len(description) > 512:
            raise Invalid("a group description is at most 512 characters")
        with session_scope(self.engine) as session:
            if session.get(GroupRecord, name) is not None:
                raise Conflict(f"group {name} exists already")
            session.add(GroupRecord(name=name, description=description))
        return self.show_group(name, caller=caller)

    def list_groups(self, *, caller: Principal) -> list[dict[str, Any]]:
        with session_scope(self.engine) as session:
            query = select(GroupRecord).order_by(GroupRecord.name)
            if not caller.sees_all:
                query = query.where(GroupRecord.name.in_(sorted(caller.groups)))
            return [_group_dict(session, row) for row in session.scalars(query)]

    def show_group(self, name: str, *, caller: Principal) -> dict[str, Any]:
        """A group, to its members and administrators (anyone else: not found)."""
        with session_scope(self.engine) as session:
            row = session.get(GroupRecord, name)
            if row is None or not (caller.sees_all or name in caller.groups):
                raise NotFound(f"no group {name[:70]!r}", hint="see `stratus group list`")
            return _group_dict(session, row)

    def add_member(self, group: str, user: str, *, caller: Principal) -> dict[str, Any]:
        _admin_only(caller, "change groups")
        with session_scope(self.engine) as session:
            _group(session, group)
            _user(session, user)
            if session.get(GroupMemberRecord, (group, user)) is None:
                session.add(GroupMemberRecord(group=group, user=user))
        return self.show_group(group, caller=caller)

    def remove_member(self, group: str, user: str, *, caller: Principal) -> dict[str, Any]:
        _admin_only(caller, "change groups")
        with session_scope(self.engine) as session:
            _group(session, group)
            done = session.execute(
                delete(GroupMemberRecord).where(
                    GroupMemberRecord.group == group, GroupMemberRecord.user == user
                )
            )
            if not getattr(done, "rowcount", 0):
                raise NotFound(f"{user[:70]} is not a member of {group}")
        return self.show_group(group, caller=caller)


def _admin_only(caller: Principal, what: str) -> None:
    if not caller.sees_all:
        raise Forbidden(f"only an administrator may {what}")


def _sees(caller: Principal, name: str) -> bool:
    return caller.sees_all or caller.user == name


def _user(session: Any, name: str) -> UserRecord:
    row = session.get(UserRecord, name)
    if row is None:
        raise NotFound(f"no user {name[:70]!r}", hint="see `stratus user list`")
    return row  # type: ignore[no-any-return]


def _group(session: Any, name: str) -> GroupRecord:
    row = session.get(GroupRecord, name)
    if row is None:
        raise NotFound(f"no group {name[:70]!r}", hint="see `stratus group list`")
    return row  # type: ignore[no-any-return]


_USERS = cast(Table, UserRecord.__table__)
_MEMBERS = cast(Table, GroupMemberRecord.__table__)
_USER = select(_USERS.c.admin, _USERS.c.disabled).where(_USERS.c.name == bindparam("b_name"))
_GROUPS_OF = select(_MEMBERS.c.group).where(_MEMBERS.c.user == bindparam("b_name"))


def _groups_of(session: Any, user: str) -> list[str]:
    return list(
        session.scalars(
            select(GroupMemberRecord.group)
            .where(GroupMemberRecord.user == user)
            .order_by(GroupMemberRecord.group)
        )
    )


def _groups_by_user(session: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    rows = session.execute(
        select(GroupMemberRecord.user, GroupMemberRecord.group).order_by(GroupMemberRecord.group)
    )
    for user, group in rows:
        out.setdefault(user, []).append(group)
    return out


def _user_dict(row: UserRecord, groups: list[str]) -> dict[str, Any]:
    return {
        "name": row.name,
        "email": row.email,
        "admin": row.admin,
        "disabled": row.disabled,
        "has_password": row.password_hash is not None,
        "groups": groups,
        "created_at": row.created_at.isoformat(),
    }


def _group_dict(session: Any, row: GroupRecord) -> dict[str, Any]:
    members = session.scalars(
        select(GroupMemberRecord.user)
        .where(GroupMemberRecord.group == row.name)
        .order_by(GroupMemberRecord.user)
    )
    return {
        "name": row.name,
        "description": row.description,
        "members": list(members),
        "created_at": row.created_at.isoformat(),
    }
