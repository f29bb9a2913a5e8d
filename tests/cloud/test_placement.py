"""Placement: instances go to the first cloud, by priority, that is enabled, has their image
and has room (the site's cap, the backend's memory, the user's quota on it); when it is full
they burst to the next, and the answer says why."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from stratuslab.accounts.users import Accounts
from stratuslab.cloud import clouds
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.placement import Ask, Placed, Placer
from stratuslab.cloud.quotas import Limits, Quotas
from stratuslab.errors import CapacityExceeded, NotFound
from stratuslab.principal import SERVER
from tests.support import set_cloud


@pytest.fixture
def second(engine: Engine, fake: FakeConnector) -> Iterator[FakeConnector]:
    """A second fake cloud 'burst', tried after 'local' (priority 200 against 100)."""
    namespace = f"test-burst-{secrets.token_hex(4)}"
    clouds.record(
        engine,
        name="burst",
        connector="fake",
        options={
            "namespace": namespace,
            "images": ["debian-12", "only-burst"],
            "memory_mb": 65536,
        },
    )
    set_cloud(engine, "burst", priority=200)
    yield FakeConnector(namespace=namespace)
    FakeConnector.ex_reset(namespace)


@pytest.fixture
def placer(pool: ConnectorPool, engine: Engine) -> Placer:
    return Placer(engine, pool)


def anywhere(count: int = 1, image: str = "debian-12") -> Ask:
    return Ask(count, {}, image=image)


def test_the_first_cloud_by_priority_takes_what_fits(placer: Placer, second: FakeConnector):
    (placed,) = placer.place("alice", [anywhere(3)])
    assert placed == Placed("local", "debian-12", "first by priority with room")


def test_priority_decides_not_the_name(engine: Engine, placer: Placer, second: FakeConnector):
    set_cloud(engine, "burst", priority=1)
    (placed,) = placer.place("alice", [anywhere()])
    assert isinstance(placed, Placed) and placed.cloud == "burst"


def test_past_the_site_cap_instances_burst_to_the_next_cloud_saying_why(
    engine: Engine, placer: Placer, second: FakeConnector
):
    set_cloud(engine, "local", max_instances=4)
    found = placer.place("alice", [anywhere() for _ in range(6)])
    assert [p.cloud for p in found if isinstance(p, Placed)] == ["local"] * 4 + ["burst"] * 2
    burst = found[4]
    assert isinstance(burst, Placed)
    assert burst.reason == "burst: local is full (4 of 4 instances)"


def test_the_cap_counts_what_is_already_there(
    engine: Engine, pool: ConnectorPool, placer: Placer, second: FakeConnector
):
    set_cloud(engine, "local", max_instances=2)
    InstanceService(engine, owner="bob", connectors=pool).run(RunRequest("debian-12", count=2))
    (placed,) = placer.place("alice", [anywhere()])
    assert isinstance(placed, Placed) and placed.cloud == "burst"
    assert "local is full (2 of 2 instances)" in placed.reason


def test_a_request_goes_whole_to_one_cloud(engine: Engine, placer: Placer, second: FakeConnector):
    set_cloud(engine, "local", max_instances=4)
    (placed,) = placer.place("alice", [anywhere(5)])
    assert isinstance(placed, Placed) and placed.cloud == "burst"


def test_a_disabled_cloud_takes_nothing_new(engine: Engine, placer: Placer, second: FakeConnector):
    set_cloud(engine, "local", enabled=False, note="maintenance until 14:00")
    (placed,) = placer.place("alice", [anywhere()])
    assert isinstance(placed, Placed) and placed.cloud == "burst"
    assert placed.reason == "burst: local takes no new instances"  # the note is not said


def test_a_cloud_without_the_image_is_passed_over(placer: Placer, second: FakeConnector):
    (placed,) = placer.place("alice", [anywhere(image="only-burst")])
    assert isinstance(placed, Placed) and placed.cloud == "burst"
    assert "local: image 'only-burst'" in placed.reason


def test_an_image_no_cloud_has_is_not_found_naming_each_cloud(
    placer: Placer, second: FakeConnector
):
    (refused,) = placer.place("alice", [anywhere(image="nope")])
    assert isinstance(refused, NotFound)
    assert "local: image 'nope'" in refused.message and "burst: image 'nope'" in refused.message


def test_images_per_cloud_are_used_where_they_are_listed(placer: Placer, second: FakeConnector):
    ask = Ask(1, {"burst": "only-burst"})  # the module lists an image for burst alone
    (placed,) = placer.place("alice", [ask])
    assert placed == Placed("burst", "only-burst", "first by priority with room")


def test_when_no_cloud_has_room_the_refusal_gives_each_clouds_reason(
    engine: Engine, placer: Placer, second: FakeConnector
):
    set_cloud(engine, "local", max_instances=1)
    set_cloud(engine, "burst", enabled=False)
    (refused,) = placer.place("alice", [anywhere(2)])
    assert isinstance(refused, CapacityExceeded)
    assert "local is full (0 of 1 instances)" in refused.message
    assert "burst takes no new instances" in refused.message


def test_the_backends_memory_is_room_too(engine: Engine, placer: Placer, second: FakeConnector):
    # The fake has 16 GiB, less the host's reserve of 512 MiB.
    (placed,) = placer.place("alice", [Ask(2, {}, ram_mb=8000, image="debian-12")])
    assert isinstance(placed, Placed) and placed.cloud == "burst"
    assert "local: not enough capacity: 2 x 8000 MiB of memory asked, 15872 MiB free" in (
        placed.reason
    )


@pytest.fixture
def users(engine: Engine) -> None:
    for name in ("alice", "bob"):
        Accounts(engine).add_user(name, caller=SERVER)


@pytest.mark.usefixtures("users")
def test_a_users_quota_on_a_cloud_sends_their_instances_on(
    engine: Engine, pool: ConnectorPool, second: FakeConnector
):
    quotas = Quotas(engine)
    quotas.set("user:alice", cloud="local", limits=Limits(instances=1), caller=SERVER)
    placer = Placer(engine, pool, reserved=quotas.reserved)
    first, then = placer.place("alice", [anywhere(), anywhere()])
    assert isinstance(first, Placed) and first.cloud == "local"
    assert isinstance(then, Placed) and then.cloud == "burst"
    assert "over user alice's quota (cloud local)" in then.reason
    (bobs,) = placer.place("bob", [anywhere()])  # alice's quota binds alice alone
    assert isinstance(bobs, Placed) and bobs.cloud == "local"


def test_pinned_asks_stay_on_their_cloud_or_are_refused(
    engine: Engine, placer: Placer, second: FakeConnector
):
    set_cloud(engine, "local", max_instances=1)
    first, then = placer.place(
        "alice", [Ask(1, {}, pinned="local", image="x"), Ask(1, {}, pinned="local", image="x")]
    )
    assert first == Placed("local", "x", "pinned")  # the image is admission's to look up
    assert isinstance(then, CapacityExceeded) and "local is full" in then.message
    (unknown,) = placer.place("alice", [Ask(1, {}, pinned="mars", image="x")])
    assert isinstance(unknown, NotFound) and unknown.message == "no cloud called 'mars' is recorded"


def test_instances_asked_anywhere_are_recorded_where_they_were_placed(
    engine: Engine, pool: ConnectorPool, second: FakeConnector
):
    set_cloud(engine, "local", max_instances=1)
    service = InstanceService(engine, owner="alice", connectors=pool)
    (one,) = service.run(RunRequest("debian-12", anywhere=True))
    (two,) = service.run(RunRequest("debian-12", anywhere=True))
    assert (one.cloud, two.cloud) == ("local", "burst")
    assert [i.name for i in second.list_instances()] == [two.name]
    with pytest.raises(CapacityExceeded, match="local is full"):
        service.run(RunRequest("debian-12", cloud="local"))  # asked there: not moved


def test_a_cloud_that_does_not_answer_is_passed_over(
    engine: Engine, placer: Placer, fake: FakeConnector, second: FakeConnector
):
    from stratuslab.errors import BackendUnavailable

    fake.ex_fail_next("get_image", BackendUnavailable("cannot reach LXD"))
    (placed,) = placer.place("alice", [anywhere()])
    assert isinstance(placed, Placed) and placed.cloud == "burst"
    assert "local: image 'debian-12': cannot reach LXD" in placed.reason


@pytest.mark.usefixtures("users")
def test_what_a_placement_puts_on_a_cloud_counts_for_the_next_ask(
    engine: Engine, pool: ConnectorPool, second: FakeConnector
):
    quotas = Quotas(engine)
    quotas.set("user:alice", cloud="local", limits=Limits(cpu=4), caller=SERVER)
    placer = Placer(engine, pool, reserved=quotas.reserved)
    found = placer.place("alice", [Ask(1, {}, cpu=3, image="debian-12")] * 2)
    assert [p.cloud for p in found if isinstance(p, Placed)] == ["local", "burst"]


def test_asks_that_must_reach_the_server_pass_over_clouds_off_the_site() -> None:
    """A run's node instance calls the server back at its site address: a public cloud
    (Libcloud's) is passed over for it, while a user's own instance may go there."""
    from stratuslab.cloud.clouds import Cloud
    from stratuslab.cloud.placement import Room, choose

    rooms = [Room(Cloud("local", "lxd", {}, max_instances=0), 0), Room(Cloud("aws", "x", {}), 0)]
    node, mine = Ask(1, {}, image="debian-12", on_site=True), Ask(1, {}, image="debian-12")
    refused, placed = choose(
        [node, mine], rooms, image_found=lambda _c, _i: True, on_site=lambda c: c == "local"
    )
    assert isinstance(refused, CapacityExceeded)
    assert "aws: its instances would not reach this server" in refused.message
    assert isinstance(placed, Placed) and placed.cloud == "aws"


@pytest.mark.lxd
def test_on_lxd_past_the_local_cap_an_instance_bursts_to_the_second_host(
    engine: Engine, remote_lxd: dict[str, object]
) -> None:
    """Both clouds real: this host's LXD capped at 0, the nested host over HTTPS after it.
    The instance runs there, on the nested host's own network, and is destroyed there."""
    from stratuslab import config

    settings = config.load()
    local = {"endpoint": settings.lxd_endpoint, "profile": settings.lxd_profile}
    clouds.record(engine, name="local", connector="lxd", options=local)
    clouds.record(engine, name="host2", connector="lxd", options=dict(remote_lxd))
    set_cloud(engine, "local", max_instances=0)
    set_cloud(engine, "host2", priority=200)
    pool = ConnectorPool(engine)
    service = InstanceService(engine, owner="alice", connectors=pool, name_prefix="test-burst")
    try:
        (view,) = service.run(RunRequest("debian-12", anywhere=True))
        try:
            assert view.cloud == "host2" and view.state == "running"
            assert view.address and view.address.startswith("10.211.")  # host2's bridge
            assert view.name in {i.name for i in pool("host2").list_instances()}
            assert view.name not in {i.name for i in pool("local").list_instances()}
        finally:
            service.kill(view.id)
        assert view.name not in {i.name for i in pool("host2").list_instances()}
    finally:
        pool.close()
