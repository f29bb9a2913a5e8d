"""Whose images are whose: a user's private image is theirs alone, a public one anybody's."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from stratuslab.cloud import catalog
from stratuslab.cloud.catalog import Catalog, alias_for
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.errors import CapacityExceeded, Conflict, Invalid, NotFound


def service(engine: Engine, owner: str) -> InstanceService:
    return InstanceService(engine, owner=owner, connectors=ConnectorPool(engine), name_prefix="t")


def saved(
    engine: Engine, fake: FakeConnector, owner: str, name: str, *, public: bool = False
) -> str:
    (view,) = service(engine, owner).run(RunRequest(image="debian-12"))
    image = fake.publish_image(view.name, alias=alias_for(owner, name))
    Catalog(engine).record(cloud="local", image=image, owner=owner, origin="save", public=public)
    return image.name


def test_a_private_image_is_its_owners_alone_by_name_and_by_fingerprint(
    engine: Engine, fake: FakeConnector
) -> None:
    alias = saved(engine, fake, "alice", "lab")
    fingerprint = fake.get_image(alias).fingerprint
    alice, bob = service(engine, "alice"), service(engine, "bob")
    assert alias in [i.name for i in alice.list_images()]
    assert alias not in [i.name for i in bob.list_images()]
    assert "debian-12" in [i.name for i in bob.list_images()]  # the site's, anybody's
    (mine,) = alice.run(RunRequest(image=alias))
    assert mine.state == "running"
    with pytest.raises(NotFound) as by_name:
        bob.run(RunRequest(image=alias))
    with pytest.raises(NotFound) as unknown:
        bob.run(RunRequest(image="alice/nothing"))
    assert by_name.value.message == f"no image called {alias!r}"
    assert by_name.value.hint == unknown.value.hint
    with pytest.raises(NotFound):
        bob.run(RunRequest(image=fingerprint))
    assert [v.owner for v in bob.list_instances()] == []  # nothing recorded for the refusal


def test_a_public_image_anybody_may_start(engine: Engine, fake: FakeConnector) -> None:
    alias = saved(engine, fake, "alice", "shared", public=True)
    bob = service(engine, "bob")
    assert alias in [i.name for i in bob.list_images()]
    (view,) = bob.run(RunRequest(image=alias))
    assert view.owner == "bob"
    assert Catalog(engine).find(cloud="local", alias=alias, owner="bob").owner == "alice"


def test_names_are_the_owners_own_and_taken_once(engine: Engine, fake: FakeConnector) -> None:
    assert alias_for("alice", "web-1.2") == "alice/web-1.2"
    assert alias_for("alice", "alice/web") == "alice/web"
    with pytest.raises(Invalid, match="your images are named alice/NAME"):
        alias_for("alice", "bob/web")
    for bad in ("", "Web", "-x", "a b", "x" * 64):
        with pytest.raises(Invalid):
            alias_for("alice", bad)
    alias = saved(engine, fake, "alice", "once")
    with pytest.raises(Conflict, match="exists already"):
        Catalog(engine).record(
            cloud="local", image=fake.get_image(alias), owner="alice", origin="save"
        )
    with pytest.raises(Invalid, match="must be named bob/NAME"):
        Catalog(engine).record(
            cloud="local", image=fake.get_image(alias), owner="bob", origin="save"
        )
    with pytest.raises(NotFound):
        Catalog(engine).find(cloud="local", alias=alias, owner="bob")
    Catalog(engine).forget(cloud="local", alias=alias)
    assert Catalog(engine).owned(cloud="local", owner="alice") == []


def test_a_user_holds_a_bounded_number_of_images(
    engine: Engine, fake: FakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "MAX_IMAGES_PER_USER", 2)
    saved(engine, fake, "alice", "one")
    saved(engine, fake, "alice", "two")
    with pytest.raises(CapacityExceeded, match="alice holds 2 images on local"):
        Catalog(engine).reserve(cloud="local", alias="alice/three", owner="alice", origin="save")
    saved(engine, fake, "bob", "his")  # another user's count is his own
