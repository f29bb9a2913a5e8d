"""A plan's volumes: declarations merged along a component's parents, bound by the node, and
refused at plan time with the file and line when they cannot work."""

from __future__ import annotations

import json
import textwrap

import pytest

from stratuslab.deploy import bake_digest
from stratuslab.deploy.kinds import ApplicationModule, ComponentModule
from stratuslab.deploy.plan import Plan, component_node, resolve
from stratuslab.deploy.plan_volumes import NodeVolume, describe, writable_bound
from stratuslab.errors import Invalid
from tests.deploy.test_model import IMAGE, Store, yaml

GiB = 1 << 30

PARENT = """
kind: component
parent: base
volumes:
  data:
    size: 1GiB
    path: /var/lib/postgresql
    description: the cluster's files
  logs: {size: 100MiB}
"""
CHILD = """
kind: component
parent: pg
volumes:
  data: {size: 4GiB}
  refs: {path: /srv/refs, read_only: true}
"""


@pytest.fixture
def store() -> Store:
    store = Store()
    store.add("apps/base", IMAGE)
    store.add("apps/pg", PARENT)
    store.add("apps/db", CHILD)
    store.add("apps/one", "kind: component\nparent: base\nvolumes:\n  data: {size: 1GiB}\n")
    store.add("apps/plain", "kind: component\nparent: base\n")
    return store


def plan_of(store: Store, nodes: str, **kwargs: object) -> Plan:
    text = "kind: application\nnodes:\n" + textwrap.indent(yaml(nodes), "  ")
    app = store.add("apps/app", text)
    assert isinstance(app, ApplicationModule)
    return resolve(app, 1, store, **kwargs)  # type: ignore[arg-type]


def refusal(store: Store, nodes: str, **kwargs: object) -> Invalid:
    with pytest.raises(Invalid) as caught:
        plan_of(store, nodes, **kwargs)
    return caught.value


def test_a_child_overrides_a_parents_volume_field_by_field(store: Store) -> None:
    plan = plan_of(
        store,
        """
          db:
            component: db
            volumes:
              refs: ada/genomes
        """,
    )
    assert plan.nodes["db"].volumes == (
        NodeVolume("data", "/var/lib/postgresql", False, "the cluster's files", 4 * GiB),
        NodeVolume("logs", "/mnt/logs", False, "", 100 << 20),
        NodeVolume("refs", "/srv/refs", True, "", None, bound="ada/genomes"),
    )
    assert [v.fresh for v in plan.nodes["db"].volumes] == [True, True, False]
    data = plan.nodes["db"].volumes[0]
    assert data.fresh_name("0123abcd-ffff", "db", 12) == "0123abcd-db-12-data"
    assert describe(data) == "data: fresh, 4 GiB at /var/lib/postgresql (read-write)"
    assert describe(plan.nodes["db"].volumes[2]) == "refs: ada/genomes at /srv/refs (read-only)"


def test_volumes_survive_the_plan_s_json_and_old_plans_have_none(store: Store) -> None:
    plan = plan_of(store, "  db:\n    component: one\n    volume: alice/pgdata\n")
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert plan.to_dict()["nodes"]["db"]["volumes"] == [
        {
            "name": "data",
            "path": "/mnt/data",
            "read_only": False,
            "description": "",
            "size_bytes": GiB,
            "bound": "alice/pgdata",
            "volume_id": None,
        }
    ]
    old = plan.to_dict()
    del old["nodes"]["db"]["volumes"]
    assert Plan.from_dict(old).nodes["db"].volumes == ()


def test_a_read_only_binding_may_go_to_many_instances(store: Store) -> None:
    plan = plan_of(
        store,
        """
          db:
            component: one
            multiplicity: 3
            volumes:
              data: {volume: ada/genomes, read_only: true}
        """,
    )
    (volume,) = plan.nodes["db"].volumes
    assert (volume.bound, volume.read_only) == ("ada/genomes", True)
    assert writable_bound(plan.nodes["db"].volumes) is None
    fresh = plan_of(store, "  db:\n    component: one\n    multiplicity: 3\n")
    assert writable_bound(fresh.nodes["db"].volumes) is None  # one fresh volume per instance


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            "  db:\n    component: db\n    volume: pgdata\n",
            "apps/app.yaml:5: nodes.db.volume: apps/db mounts 3 volumes (data, logs, "
            "refs): volume: binds a component's only volume",
        ),
        (
            "  db:\n    component: plain\n    volume: pgdata\n",
            "apps/app.yaml:5: nodes.db.volume: apps/plain mounts 0 volumes (none)",
        ),
        (
            "  db:\n    component: one\n    volumes:\n      date: pgdata\n",
            "apps/app.yaml:6: nodes.db.volumes.date: 'date' is not a volume of apps/one (data)",
        ),
        (
            "  db:\n    component: db\n",
            "apps/app.yaml:3: nodes.db: volume 'refs' of apps/db is mounted read-only: "
            "bind it to a volume that holds its data",
        ),
        (
            "  db:\n    component: db\n    volumes:\n      refs: {volume: x, read_only: false}\n",
            "apps/app.yaml:6: nodes.db.volumes.refs.read_only: apps/db mounts 'refs' read-only: it "
            "cannot be bound read-write",
        ),
        (
            "  db:\n    component: one\n    multiplicity: 2\n    volume: pgdata\n",
            "apps/app.yaml:6: nodes.db.volume: pgdata is bound read-write, and a volume "
            "attached read-write goes to one instance: this node has 2",
        ),
        (
            "  db:\n    component: one\n    multiplicity: 2\n    volumes:\n"
            "      data: {volume: bob/pgdata}\n",
            "apps/app.yaml:7: nodes.db.volumes.data: bob/pgdata is bound read-write",
        ),
    ],
)
def test_bindings_that_cannot_work_are_refused_at_the_node(
    store: Store, nodes: str, message: str
) -> None:
    assert refusal(store, nodes).message.startswith(message)


def test_a_multiplicity_given_at_deploy_time_counts_for_a_read_write_binding(
    store: Store,
) -> None:
    nodes = "  db:\n    component: one\n    volume: pgdata\n"
    error = refusal(store, nodes, multiplicities={"db": 3})
    assert error.message.endswith("this node has 3")
    assert "read_only: true" in (error.hint or "")
    assert plan_of(store, nodes, multiplicities={"db": 0}).nodes["db"].multiplicity == 0


def test_a_fresh_volume_needs_a_size(store: Store) -> None:
    store.add("apps/nosize", "kind: component\nparent: base\nvolumes:\n  data: {path: /srv}\n")
    error = refusal(store, "  db:\n    component: nosize\n")
    assert error.message == (
        "apps/app.yaml:3: nodes.db: volume 'data' of apps/nosize has no size, and the "
        "node does not bind it: the run would make one for each instance"
    )
    assert error.hint == (
        "give it a size in apps/nosize.yaml (size: 2GiB), or bind it (volumes: {data: NAME})"
    )
    bound = plan_of(store, "  db:\n    component: nosize\n    volume: pgdata\n")
    assert bound.nodes["db"].volumes[0].size_bytes is None


@pytest.mark.parametrize(
    ("volumes", "message"),
    [
        (
            "  a: {size: 1GiB, path: /srv/x}\n  b: {size: 1GiB, path: /srv/x}\n",
            "apps/bad.yaml:5: volumes.b.path: /srv/x is the mount path of volume 'a' (/srv/x)",
        ),
        (
            "  a: {size: 1GiB, path: /srv}\n  b: {size: 1GiB, path: /srv/x}\n",
            "apps/bad.yaml:5: volumes.b.path: /srv/x overlaps the mount path of volume 'a' (/srv)",
        ),
        (
            "  a: {size: 1GiB, path: /srv/x/y}\n  b: {size: 1GiB, path: /srv/x}\n",
            "apps/bad.yaml:5: volumes.b.path: /srv/x overlaps the mount path of volume 'a'",
        ),
    ],
)
def test_two_volumes_at_one_path_or_one_inside_another_are_refused(
    store: Store, volumes: str, message: str
) -> None:
    store.add("apps/bad", "kind: component\nparent: base\nvolumes:\n" + volumes)
    assert refusal(store, "  db:\n    component: bad\n").message.startswith(message)
    assert not refusal(store, "  db:\n    component: bad\n").message.startswith("apps/app")


def test_a_path_only_a_child_overlaps_is_refused_at_the_child(store: Store) -> None:
    store.add(
        "apps/deeper",
        "kind: component\nparent: pg\nvolumes:\n"
        "  more: {size: 1GiB, path: /var/lib/postgresql/x}\n",
    )
    assert refusal(store, "  db:\n    component: deeper\n").message.startswith(
        "apps/deeper.yaml:4: volumes.more.path: /var/lib/postgresql/x overlaps the mount path of "
        "volume 'data'"
    )
    # ... and a child moving its parent's volume elsewhere is fine
    store.add("apps/moved", "kind: component\nparent: pg\nvolumes:\n  data: {path: /srv/pg}\n")
    plan = plan_of(store, "  db:\n    component: moved\n")
    assert plan.nodes["db"].volumes[0].path == "/srv/pg"


def test_sixteen_volumes_at_most_with_the_parents(store: Store) -> None:
    many = "".join(f"  v{i}: {{size: 1GiB}}\n" for i in range(15))
    store.add("apps/many", "kind: component\nparent: pg\nvolumes:\n" + many)
    assert refusal(store, "  db:\n    component: many\n").message == (
        "apps/many.yaml:3: volumes: 17 volumes with its parents': a component mounts at most 16"
    )


def test_a_bake_mounts_no_volume(store: Store) -> None:
    component = store.versions["apps/db"][0]
    assert isinstance(component, ComponentModule)
    (node,) = component_node(component, 1, store, cloud="local", name="db").nodes.values()
    assert node.volumes == ()
    plan = plan_of(store, "  db:\n    component: one\n")
    assert plan.nodes["db"].volumes != ()
    assert bake_digest.install_only(plan.nodes["db"]).volumes == ()
