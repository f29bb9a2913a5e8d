"""The site's trust policy at every instance start: decided in admission, once per distinct
image of a batch, before anything is recorded (``cloud/admission.py``, ``prepare_many``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.cloud.base import Image
from stratuslab.cloud.catalog import Catalog, alias_for
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, Prepared, RunRequest
from stratuslab.cloud.marketplace.gate import ImagePolicy, facts
from stratuslab.cloud.marketplace.identifier import Checksums
from stratuslab.cloud.marketplace.policy import Policy
from stratuslab.config import Settings
from stratuslab.db.models import InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import NotFound, Untrusted
from tests.cloud.marketplace.support import (
    Shelf,
    endorse,
    file_checksums,
    image_archive,
    make_ca,
    make_person,
)

TODAY = dt.datetime.now(dt.UTC)
CA = make_ca("Site Trust CA")
JANE = make_person(
    CA, "Jane Tester", san_email="jane@example.org", not_after=TODAY + dt.timedelta(days=30)
)


def names(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return sorted(session.scalars(select(InstanceRecord.name)))


@pytest.fixture
def endorsed(tmp_path: Path, fake: FakeConnector) -> tuple[Image, Checksums]:
    """An image on the fake cloud with an entry about its bytes: the tarball imported, as
    LXD does, under its SHA-256."""
    archive = image_archive(tmp_path / "webapp-base.tar.gz")
    sums = file_checksums(archive)
    return fake.import_image(archive, name="webapp-base", sha256=sums.sha256), sums


def service(engine: Engine, pool: ConnectorPool, gate: ImagePolicy | None) -> InstanceService:
    return InstanceService(engine, owner="alice", connectors=pool, name_prefix="t", policy=gate)


def test_a_refused_image_starts_nothing_records_nothing_and_names_the_rule(
    engine: Engine, pool: ConnectorPool, fake: FakeConnector
) -> None:
    gate = ImagePolicy(Policy(unsigned="refuse"))
    fingerprint = fake.get_image("debian-12").fingerprint
    with pytest.raises(Untrusted) as refused:
        service(engine, pool, gate).run(RunRequest(image="debian-12", name="web"))
    assert refused.value.message == (
        "image debian-12 on local refused by the site's policy (rule unsigned): no Marketplace"
        f" entry endorses it (sha256 {fingerprint[:8]}...)"
    )
    assert names(engine) == []
    assert fake.list_instances() == []


def test_an_endorsed_image_starts(
    engine: Engine, pool: ConnectorPool, fake: FakeConnector, endorsed: tuple[Image, Checksums]
) -> None:
    _, sums = endorsed
    gate = ImagePolicy(Policy(unsigned="refuse"), source=Shelf(endorse(sums, JANE, now=TODAY)[1]))
    (view,) = service(engine, pool, gate).run(RunRequest(image="webapp-base", name="web"))
    assert view.state == "running"
    assert names(engine) == ["web"]


def test_a_batch_is_decided_once_per_distinct_image_and_each_request_on_its_own(
    engine: Engine, pool: ConnectorPool, endorsed: tuple[Image, Checksums]
) -> None:
    image, sums = endorsed
    shelf = Shelf(endorse(sums, JANE, now=TODAY)[1])
    gate = ImagePolicy(Policy(unsigned="refuse"), source=shelf)
    requests = [
        RunRequest(
            image="webapp-base" if n % 2 else "debian-12",
            name=f"r1-web-{n}",
            run_id="r1",  # a run's node instances are decided as every start is
            node_instance=f"web.{n}",
        )
        for n in range(1, 7)
    ]
    outcomes = service(engine, pool, gate).prepare_many(requests)
    assert [type(o).__name__ for o in outcomes] == ["Prepared", "Untrusted"] * 3
    assert len(shelf.asked) == 2 and image.fingerprint in shelf.asked
    assert names(engine) == ["r1-web-1", "r1-web-3", "r1-web-5"]
    assert all(isinstance(o, Prepared) and o.image == image.fingerprint for o in outcomes[::2])


def test_a_deprecated_entry_refuses_the_start(
    engine: Engine, pool: ConnectorPool, endorsed: tuple[Image, Checksums]
) -> None:
    _, sums = endorsed
    gone = endorse(sums, JANE, now=TODAY, deprecated="superseded by webapp-base-2")[1]
    gate = ImagePolicy(Policy(), source=Shelf(gone))
    with pytest.raises(Untrusted, match=r"\(rule deprecated\): entry .* superseded by"):
        service(engine, pool, gate).prepare(RunRequest(image="webapp-base"))
    assert names(engine) == []


def test_the_default_policy_starts_what_started_before(
    engine: Engine, pool: ConnectorPool, settings: Settings
) -> None:
    gate = ImagePolicy.from_settings(settings)
    (view,) = service(engine, pool, gate).run(RunRequest(image="debian-12", name="web"))
    assert view.state == "running"
    assert gate.decide_image("local", pool("local").get_image("debian-12")).rule == "unsigned"


@pytest.mark.lxd
def test_lxd_names_an_imported_image_by_the_sha256_and_size_an_entry_states(
    tmp_path: Path, settings: Settings
) -> None:
    """What the policy compares, as LXD has it: an entry made from the tarball describes the
    image LXD imported from it (its fingerprint and size), and one byte more does not."""
    from stratuslab.cloud.connectors.lxd import LxdConnector
    from stratuslab.cloud.connectors.lxd_api import LxdApi

    archive = image_archive(tmp_path / "image.tar.gz", payload=secrets.token_bytes(64))
    sums = file_checksums(archive)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == sums.sha256
    lxd = LxdConnector(endpoint=settings.lxd_endpoint, profile=settings.lxd_profile)
    name = f"test-policy-{secrets.token_hex(4)}"
    try:
        image = lxd.import_image(archive, name=name, sha256=sums.sha256)
        gate = ImagePolicy(
            Policy(unsigned="refuse"), source=Shelf(endorse(sums, JANE, now=TODAY)[1])
        )
        assert gate.decide_image("lxd", image).rule == "endorsed"
        larger = Checksums(**{**vars(sums), "size": sums.size + 1})
        wrong = gate.decide(facts("lxd", image), [endorse(larger, JANE, now=TODAY)[1]])
        assert (wrong.rule, wrong.allowed) == ("size", False)
    finally:
        with contextlib.suppress(NotFound):
            lxd.api.delete(LxdApi.path("images", sums.sha256))
        lxd.close()


def test_a_users_image_is_never_the_sites_own_whatever_it_inherited(
    engine: Engine, pool: ConnectorPool, fake: FakeConnector, tmp_path: Path
) -> None:
    """LXD copies the properties of the image an instance came from into an image published
    from it: a user's saved base image holds the site's `stratus.recipe` too."""
    archive = image_archive(tmp_path / "base.tar.gz", properties="  stratus.recipe: abc\n")
    fake.import_image(archive, name="base", sha256=file_checksums(archive).sha256)
    gate = ImagePolicy(Policy(unsigned="refuse"))
    alice = service(engine, pool, gate)
    (view,) = alice.run(RunRequest(image="base", name="web"))  # rule site-image
    saved = fake.publish_image(view.name, alias=alias_for("alice", "mine"))
    assert saved.properties["stratus.recipe"] == "abc"
    Catalog(engine).record(cloud="local", image=saved, owner="alice", origin="save")
    with pytest.raises(Untrusted, match=r"alice/mine on local refused .*\(rule unsigned\)"):
        alice.run(RunRequest(image="alice/mine"))
    image, decision = alice.decide_image("alice/mine", cloud="local")
    assert (image.name, decision.rule) == ("alice/mine", "unsigned")
    assert alice.decide_image("base", cloud="local")[1].rule == "site-image"
    bob = InstanceService(engine, owner="bob", connectors=pool, name_prefix="t", policy=gate)
    with pytest.raises(NotFound):
        bob.decide_image("alice/mine", cloud="local")
    with pytest.raises(NotFound):
        bob.get_image(saved.fingerprint, cloud="local")
