"""Saving instances as images and deleting images: whose may be deleted, by whom."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from stratuslab.cloud.catalog import Catalog
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.imaging import ImageService
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.errors import BackendError, Conflict, Forbidden, Invalid, NotFound


def images(engine: Engine, owner: str, *, admin: bool = False) -> ImageService:
    pool = ConnectorPool(engine)
    service = InstanceService(engine, owner=owner, connectors=pool, name_prefix="t", sees_all=admin)
    return ImageService(engine, owner=owner, admin=admin, instances=service, connectors=pool)


def saved(engine: Engine, owner: str, name: str, *, public: bool = False) -> str:
    service = images(engine, owner)
    (view,) = service.instances.run(RunRequest(image="debian-12"))
    return service.save(view.id, name=name, public=public).image.name


def test_save_records_the_image_as_the_callers_with_its_instance(
    engine: Engine, fake: FakeConnector
) -> None:
    service = images(engine, "alice")
    (view,) = service.instances.run(RunRequest(image="debian-12"))
    service.instances.stop(view.id)
    made = service.save(view.id, name="web", description="with nginx")
    assert made.image.name == "alice/web"
    owned = Catalog(engine).find(cloud="local", alias="alice/web", owner="alice")
    assert (owned.origin, owned.details["instance"], owned.details["from_image"]) == (
        "save",
        view.id,
        "debian-12",
    )
    properties = fake.get_image("alice/web").properties
    assert (properties["stratus.owner"], properties["stratus.origin"]) == ("alice", "save")
    assert service.instances.get(view.id).state == "stopped"  # left as it was
    with pytest.raises(Conflict):
        service.save(view.id, name="web")
    with pytest.raises(NotFound):  # bob does not reach alice's instance
        images(engine, "bob").save(view.id, name="stolen")
    with pytest.raises(Invalid):
        service.save(view.id, name="x", description="d" * 1001)


def test_an_image_that_cannot_be_recorded_is_not_left_on_the_backend(
    engine: Engine, fake: FakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = images(engine, "alice")
    (view,) = service.instances.run(RunRequest(image="debian-12"))

    def broken(*_args: object, **_kwargs: object) -> None:
        raise BackendError("the store is down")

    monkeypatch.setattr(service.catalog, "record", broken)
    with pytest.raises(BackendError):
        service.save(view.id, name="orphan")
    assert "alice/orphan" not in [i.name for i in fake.list_images()]


def test_users_delete_their_own_an_administrator_any_and_the_sites_with_site(
    engine: Engine, fake: FakeConnector
) -> None:
    private = saved(engine, "alice", "private")
    public = saved(engine, "alice", "public", public=True)
    bob = images(engine, "bob")
    with pytest.raises(NotFound):
        bob.delete(private, cloud="local")
    with pytest.raises(Forbidden, match="alice's image"):
        bob.delete(public, cloud="local")
    with pytest.raises(NotFound):
        bob.delete("private", cloud="local")  # bob/private: none
    with pytest.raises(Forbidden, match="administrator"):
        bob.delete("debian-12", cloud="local", site=True)
    admin = images(engine, "ada", admin=True)
    with pytest.raises(Invalid, match="alice's image, not the site's"):
        admin.delete(public, cloud="local", site=True)
    assert admin.delete(public, cloud="local")["owner"] == "alice"
    assert images(engine, "alice").delete("private", cloud="local")["name"] == private
    assert admin.delete("debian-12", cloud="local", site=True)["origin"] == "site"
    assert fake.list_images() == []
    assert Catalog(engine).owned(cloud="local", owner=None) == []


def test_a_saved_image_is_its_owners_from_the_moment_it_exists_and_a_failed_save_leaves_nothing(
    engine: Engine, fake: FakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = images(engine, "alice")
    (view,) = service.instances.run(RunRequest(image="debian-12"))
    publish = fake.publish_image
    seen_by_bob: list[list[str]] = []

    def publishing(*args: object, **kwargs: object) -> object:
        made = publish(*args, **kwargs)  # type: ignore[arg-type]
        seen_by_bob.append([i.name for i in images(engine, "bob").instances.list_images()])
        return made

    monkeypatch.setattr(FakeConnector, "publish_image", lambda self, *a, **k: publishing(*a, **k))
    service.save(view.id, name="early")
    assert seen_by_bob == [["debian-12"]]  # the image existed, already hidden from bob
    assert Catalog(engine).find(cloud="local", alias="alice/early", owner="alice").fingerprint == (
        fake.get_image("alice/early").fingerprint
    )
    monkeypatch.undo()
    fake.ex_fail_next("publish_image", BackendError("LXD: disk full"))
    with pytest.raises(BackendError, match="disk full"):
        service.save(view.id, name="failed")
    assert [o.alias for o in Catalog(engine).owned(cloud="local", owner="alice")] == ["alice/early"]
