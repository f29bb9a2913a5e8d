"""Module rights in the store, on SQLite and PostgreSQL: who may read, push and run a module
path, projects, groups, claims, and paths pushed before rights existed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from stratuslab.db.models import GroupRecord, ModulePathRecord, ModuleRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy.model import ModuleText
from stratuslab.deploy.modules import ModuleStore
from stratuslab.deploy.rights import Right, parse_rights, show_rights
from stratuslab.errors import Conflict, Forbidden, Invalid, NotFound
from stratuslab.principal import Principal
from tests.api.conftest import store as store  # both stores, one database per test
from tests.deploy.support import BASE

ALICE = Principal.for_user("alice")
BOB = Principal.for_user("bob")
TEAM_ALICE = Principal.for_user("alice", groups=frozenset({"team"}))
TEAM_BOB = Principal.for_user("bob", groups=frozenset({"team"}))
TEAM = frozenset({"team"})
ADMIN = Principal.for_user("root", admin=True)
COMPONENT = "kind: component\nparent: base\n"
APP = "kind: application\nnodes:\n  web:\n    component: web\n"


@pytest.fixture
def modules(engine: Engine) -> ModuleStore:
    with session_scope(engine) as session:
        session.add(GroupRecord(name="team"))
    return ModuleStore(engine)


def text(path: str, body: str = BASE) -> ModuleText:
    return ModuleText(path=path, file=f"{path}.yaml", text=body)


def versions(engine: Engine, path: str) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).where(ModuleRecord.path == path)) or 0


@pytest.mark.parametrize(
    ("given", "shown"),
    [("rwx", "rwx"), ("r-x", "r-x"), ("xr", "r-x"), ("x", "r-x"), ("w", "rw-"), ("-", "---")],
)
def test_rights_are_letters_and_edit_or_run_includes_read(given: str, shown: str) -> None:
    assert show_rights(parse_rights(given)) == shown
    assert show_rights(parse_rights("")) == "---"


@pytest.mark.parametrize("bad", ["rq", "read", "rwxrwxrwx"])
def test_other_letters_are_refused(bad: str) -> None:
    with pytest.raises(Invalid, match="letters of rwx"):
        parse_rights(bad)


def test_the_first_push_owns_a_path_and_nobody_else_pushes_it(
    modules: ModuleStore, engine: Engine
) -> None:
    (first,) = modules.push([text("alice/base")], caller=ALICE)
    assert (first.owner, first.pushed_by) == ("alice", "alice")
    with pytest.raises(NotFound, match="another user holds it"):  # she keeps it private
        modules.push([text("alice/base", BASE + "description: mine\n")], caller=BOB)
    with pytest.raises(NotFound, match="no module 'alice/base'"):
        modules.get("alice/base", caller=BOB)
    assert modules.list_modules(caller=BOB) == []

    modules.rights.change("alice/base", caller=ALICE, public_rights="r")
    with pytest.raises(Forbidden, match="it is alice's, and you may read"):
        modules.push([text("alice/base", BASE + "description: mine\n")], caller=BOB)
    assert versions(engine, "alice/base") == 1  # nothing of bob's was stored
    assert modules.get("alice/base", caller=BOB).version == 1
    assert [m["path"] for m in modules.list_modules(caller=BOB)] == ["alice/base"]
    # The same text again changes nothing: reading it is enough (what `stratus deploy` does).
    (same,) = modules.push([text("alice/base")], caller=BOB, only_changed=True)
    assert same.version == 1 and versions(engine, "alice/base") == 1


def test_a_push_is_all_or_none_when_one_path_is_refused(
    modules: ModuleStore, engine: Engine
) -> None:
    modules.push([text("alice/base")], caller=ALICE)
    with pytest.raises(NotFound):
        modules.push([text("bob/base"), text("alice/base", BASE + "\n")], caller=BOB)
    assert versions(engine, "bob/base") == 0
    with session_scope(engine) as session:
        assert session.get(ModulePathRecord, "bob/base") is None


def test_a_project_holds_every_path_under_it(modules: ModuleStore) -> None:
    modules.push([text("apps/webapp", APP), text("apps/webapp/web", COMPONENT)], caller=ALICE)
    with pytest.raises(NotFound, match="you may not push 'apps/webapp/evil'"):
        modules.push([text("apps/webapp/evil")], caller=BOB)
    modules.rights.change("apps/webapp", caller=ALICE, public_rights="r")
    with pytest.raises(Forbidden, match="it is under apps/webapp, alice's"):
        modules.push([text("apps/webapp/evil")], caller=BOB)

    # With edit rights for the group, a member makes a path there: it is his, it starts with
    # the project's group and rights, and alice, who owns the project, holds it too.
    modules.rights.change("apps/webapp", caller=TEAM_ALICE, group="team", group_rights="rw")
    with pytest.raises(Forbidden):
        modules.push([text("apps/webapp/cache")], caller=BOB)  # bob is not in team
    (cache,) = modules.push([text("apps/webapp/cache")], caller=TEAM_BOB)
    assert cache.owner == "bob"
    shown = modules.rights.show("apps/webapp/cache", caller=ALICE)
    assert (shown["owner"], shown["group"], shown["rights"]["group"]) == ("bob", "team", "rw-")
    assert shown["allowed"] == "rwx" and shown["projects"] == [
        {"path": "apps/webapp", "owner": "alice"}
    ]
    modules.push([text("apps/webapp/cache", BASE + "\n")], caller=ALICE)
    modules.rights.change("apps/webapp/cache", caller=ALICE, group="", public_rights="-")
    with pytest.raises(NotFound):
        modules.get("apps/webapp/cache", caller=Principal.for_user("carol", groups=TEAM))
    assert modules.get("apps/webapp/cache", caller=BOB).version == 2  # his own, all the same


def test_a_path_cannot_be_claimed_over_other_users_paths(modules: ModuleStore) -> None:
    modules.push([text("shared/base")], caller=BOB)
    with pytest.raises(Forbidden, match="paths under it belong to other users"):
        modules.rights.change("shared", caller=ALICE, public_rights="r")
    with pytest.raises(Forbidden, match="paths under it belong to other users"):
        modules.push([text("shared", APP)], caller=ALICE)
    # Her own paths below are no obstacle, and a prefix nobody holds can be claimed.
    modules.push([text("mine/a/base")], caller=ALICE)
    claimed = modules.rights.change("mine", caller=ALICE, public_rights="rx")
    assert claimed["owner"] == "alice" and claimed["rights"]["public"] == "r-x"
    with pytest.raises(Forbidden, match="it is under mine, alice's"):
        modules.push([text("mine/b/base")], caller=BOB)


def test_only_who_holds_a_path_changes_its_rights(modules: ModuleStore) -> None:
    modules.push([text("alice/base")], caller=ALICE)
    with pytest.raises(NotFound, match="no module or project 'alice/base'"):
        modules.rights.change("alice/base", caller=BOB, public_rights="rwx")
    modules.rights.change("alice/base", caller=ALICE, public_rights="rw")
    with pytest.raises(Forbidden, match="only alice or an administrator"):
        modules.rights.change("alice/base", caller=BOB, public_rights="rwx")
    modules.push([text("alice/base", BASE + "\n")], caller=BOB)  # public edit: he may push
    with pytest.raises(NotFound, match="no group 'team' of yours"):  # not her group
        modules.rights.change("alice/base", caller=ALICE, group="team")
    with pytest.raises(NotFound, match="no group 'nosuch' of yours"):
        modules.rights.change("alice/base", caller=ADMIN, group="nosuch")
    shown = modules.rights.change("alice/base", caller=ADMIN, group="team", group_rights="x")
    assert (shown["group"], shown["rights"]["group"], shown["allowed"]) == ("team", "r-x", "rwx")


def test_an_administrator_reads_pushes_and_runs_everything(modules: ModuleStore) -> None:
    modules.push([text("alice/base")], caller=ALICE)
    assert modules.get("alice/base", caller=ADMIN, need=Right.RUN).owner == "alice"
    (again,) = modules.push([text("alice/base", BASE + "\n")], caller=ADMIN)
    assert (again.version, again.owner, again.pushed_by) == (2, "alice", "root")
    assert [m["path"] for m in modules.list_modules(caller=ADMIN)] == ["alice/base"]


def test_run_rights_are_checked_apart_from_read(modules: ModuleStore) -> None:
    modules.push([text("alice/app", APP), text("alice/web", COMPONENT)], caller=ALICE)
    modules.rights.change("alice/app", caller=ALICE, public_rights="r")
    assert modules.get("alice/app", caller=BOB).version == 1
    with pytest.raises(Forbidden, match="you may not run 'alice/app'"):
        modules.get("alice/app", caller=BOB, need=Right.RUN)
    with pytest.raises(NotFound, match="no module 'alice/web'"):  # what a run reaches
        modules.lookup_for(BOB)("alice/web", None)
    modules.rights.change("alice/app", caller=ALICE, public_rights="rx")
    assert modules.get("alice/app", caller=BOB, need=Right.RUN).version == 1


def test_modules_pushed_before_rights_belong_to_who_pushed_version_1(
    modules: ModuleStore, engine: Engine
) -> None:
    with session_scope(engine) as session:  # as the store had them: anyone pushed anything
        for version, owner in ((1, "carol"), (2, "bob")):
            session.add(
                ModuleRecord(
                    path="old/base",
                    version=version,
                    kind="image",
                    file="old/base.yaml",
                    text=BASE,
                    digest="x",
                    owner=owner,
                )
            )
    assert modules.get("old/base", caller=Principal.for_user("carol")).owner == "carol"
    with pytest.raises(NotFound):
        modules.get("old/base", caller=BOB)  # private, though he pushed version 2
    assert modules.list_modules(caller=BOB) == []
    with pytest.raises(NotFound):
        modules.push([text("old/base", BASE + "\n")], caller=BOB)
    with pytest.raises(NotFound):
        modules.push([text("old/base/sub")], caller=BOB)  # nor under it
    with session_scope(engine) as session:
        assert session.get(ModulePathRecord, "old/base") is None  # reads write nothing
    (pushed,) = modules.push([text("old/base", BASE + "\n")], caller=Principal.for_user("carol"))
    assert pushed.version == 3
    with session_scope(engine) as session:
        row = session.get(ModulePathRecord, "old/base")
        assert row is not None and (row.owner, row.group, row.rights) == (
            "carol",
            None,
            {"group": "", "public": ""},
        )


def test_pushes_at_once_number_versions_one_after_another(modules: ModuleStore) -> None:
    modules.push([text("alice/base")], caller=ALICE)
    with ThreadPoolExecutor(8) as pool:
        pushed = list(
            pool.map(
                lambda n: modules.push([text("alice/base", f"{BASE}# {n}\n")], caller=ALICE)[0],
                range(8),
            )
        )
    assert sorted(m.version for m in pushed) == list(range(2, 10))


def test_two_users_taking_one_path_at_once_leave_it_to_one(modules: ModuleStore) -> None:
    def take(who: Principal) -> str:
        try:
            return modules.push([text("race/base")], caller=who)[0].owner
        except (NotFound, Conflict) as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(take, [ALICE, BOB]))
    winner = modules.get("race/base", caller=ADMIN).owner
    assert winner in outcomes and len(set(outcomes) & {"NotFound", "Conflict"}) == 1


def test_a_node_instance_reads_and_pushes_no_module(modules: ModuleStore) -> None:
    node = Principal.for_node("run-1", "web.1")
    modules.push([text("alice/base")], caller=ALICE)
    with pytest.raises(NotFound):
        modules.get("alice/base", caller=node)
    with pytest.raises(Forbidden, match=r"web\.1 may not push modules"):
        modules.push([text("free/base")], caller=node)
    assert modules.list_modules(caller=node) == []
