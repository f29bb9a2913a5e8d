"""The cloud registry on the fake connector (and, for an unreachable backend, the real LXD
connector against a closed port on loopback): who may change clouds, the bounds, that a
backend that does not answer leaves nothing recorded, that a cloud is removed only when
nothing lives there, and that no view ever holds a credential."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from stratuslab.cloud import clouds, registry
from stratuslab.cloud.base import Capacity
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.connectors import REGISTRY
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.registry import CloudRegistry
from stratuslab.cloud.volumes import VolumeService
from stratuslab.db.models import CloudRecord, InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
)
from stratuslab.principal import Principal

ADMIN = Principal.for_user("ada", admin=True)
ALICE = Principal.for_user("alice")
SECRETS = {
    "secret": "s3cr3t-aws-key-value",
    "password": "trust-me-password",
    "client_key_pem": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----",
}
_HANG = threading.Event()


class SecretiveFake(FakeConnector):
    """The fake backend taking credentials, as real connectors do."""

    def __init__(
        self, *, secret: str = "", password: str = "", client_key_pem: str = "", **rest: Any
    ) -> None:
        super().__init__(**rest)


class HangingFake(FakeConnector):
    """A backend that does not answer when asked its capacity (until the test ends)."""

    def capacity(self) -> Capacity:
        _HANG.wait(30)
        return super().capacity()


@pytest.fixture
def pool(engine: Engine, fake: FakeConnector) -> Iterator[ConnectorPool]:
    made = ConnectorPool(engine)
    yield made
    made.close()


@pytest.fixture
def reg(engine: Engine, pool: ConnectorPool, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setitem(REGISTRY, "secretive", f"{__name__}:SecretiveFake")
    monkeypatch.setitem(REGISTRY, "hanging", f"{__name__}:HangingFake")
    made = CloudRegistry(engine, pool)
    yield made
    _HANG.set()
    made.close()
    _HANG.clear()


def names(views: list[Any]) -> list[str]:
    return [v.name for v in views]


def recorded(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return sorted(session.scalars(select(CloudRecord.name)).all())


def test_administrators_add_and_everybody_lists_the_enabled_clouds_without_options(
    reg: CloudRegistry, engine: Engine, fake_namespace: str
) -> None:
    made = reg.add(
        ADMIN, "lab-2", "fake", {"namespace": fake_namespace}, priority=50, max_instances=4
    )
    assert (made.name, made.connector, made.priority, made.max_instances) == (
        "lab-2",
        "fake",
        50,
        4,
    )
    assert made.enabled and made.note is None and made.options == {"namespace": fake_namespace}
    assert made.capacity is not None and made.capacity["cpus"] == 8
    assert names(reg.list(ALICE)) == ["lab-2", "local"]  # placement order: priority 50 < 100
    assert all(v.options is None for v in reg.list(ALICE))
    assert reg.show(ALICE, "lab-2").options is None
    with pytest.raises(Conflict, match="'lab-2' is recorded already"):
        reg.add(ADMIN, "lab-2", "fake", {"namespace": fake_namespace})


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.add(ALICE, "mine", "fake", {}),
        lambda r: r.add_lxd(ALICE, "mine", endpoint="https://127.0.0.1:9", password="x"),
        lambda r: r.update(ALICE, "local", priority=1),
        lambda r: r.update(ALICE, "local", enabled=False),
        lambda r: r.remove(ALICE, "local"),
    ],
)
def test_only_administrators_change_clouds(reg: CloudRegistry, engine: Engine, change: Any) -> None:
    with pytest.raises(Forbidden, match="only a site administrator may"):
        change(reg)
    assert recorded(engine) == ["local"]
    assert reg.show(ADMIN, "local").priority == 100 and reg.show(ADMIN, "local").enabled


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("Lab", {}, "DNS label"),
        ("lab-", {}, "DNS label"),
        ("-lab", {}, "DNS label"),
        ("l" * 65, {}, "DNS label"),
        ("", {}, "DNS label"),
        ("lab 2", {}, "DNS label"),
        ("läb", {}, "DNS label"),
        ("lab", {"priority": -1}, "within 0..10000"),
        ("lab", {"priority": 10001}, "within 0..10000"),
        ("lab", {"max_instances": -1}, "within 0..100000"),
        ("lab", {"max_instances": 100001}, "within 0..100000"),
    ],
)
def test_names_and_bounds_are_checked_before_anything_is_asked(
    reg: CloudRegistry, engine: Engine, name: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        reg.add(ADMIN, name, "fake", {}, **kwargs)
    assert recorded(engine) == ["local"]


def test_the_longest_name_and_the_bounds_themselves_are_taken(
    reg: CloudRegistry, fake_namespace: str
) -> None:
    name = "a" * 63 + "z"
    view = reg.add(ADMIN, name, "fake", {"namespace": fake_namespace}, priority=10000)
    assert view.name == name and view.priority == 10000
    assert reg.update(ADMIN, name, priority=0, max_instances=100000).max_instances == 100000
    assert reg.update(ADMIN, name, max_instances=None).max_instances is None


def test_options_are_bounded_and_an_unknown_connector_is_refused(
    reg: CloudRegistry, engine: Engine
) -> None:
    with pytest.raises(Invalid, match="unknown connector 'nosuch'"):
        reg.add(ADMIN, "lab", "nosuch", {})
    with pytest.raises(Invalid, match="bad options"):
        reg.add(ADMIN, "lab", "fake", {"nosuch": 1})
    with pytest.raises(Invalid, match="at most 32 options"):
        reg.add(ADMIN, "lab", "fake", {f"k{i}": i for i in range(33)})
    with pytest.raises(Invalid, match="option 'namespace': its value is over"):
        reg.add(ADMIN, "lab", "fake", {"namespace": "x" * 20000})
    with pytest.raises(Invalid, match="NUL"):
        reg.add(ADMIN, "lab", "fake", {"namespace": "a\x00b"})
    with pytest.raises(Invalid, match="option 'cpus': not a JSON value"):
        reg.add(ADMIN, "lab", "fake", {"cpus": float("nan")})
    assert recorded(engine) == ["local"]


def test_a_backend_that_fails_its_probe_leaves_nothing_recorded(
    reg: CloudRegistry, engine: Engine, fake_namespace: str
) -> None:
    FakeConnector(namespace=fake_namespace).ex_fail_next(
        "capacity", BackendUnavailable("the backend is down")
    )
    with pytest.raises(BackendUnavailable, match="cloud 'lab': the backend is down: nothing"):
        reg.add(ADMIN, "lab", "fake", {"namespace": fake_namespace})
    assert recorded(engine) == ["local"]


def test_an_unreachable_lxd_is_refused_naming_the_cloud_and_its_url(
    reg: CloudRegistry, engine: Engine
) -> None:
    with socket.socket() as probe:  # a port on loopback nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    with pytest.raises(BackendUnavailable) as refused:
        reg.add(ADMIN, "far", "lxd", {"endpoint": url})
    assert f"cloud 'far' at {url}" in refused.value.message
    assert "nothing was recorded" in refused.value.message
    assert recorded(engine) == ["local"]


def test_a_backend_that_does_not_answer_in_time_is_refused(
    reg: CloudRegistry, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "ADD_PROBE_TIMEOUT", 0.2)
    with pytest.raises(BackendError, match=r"did not say its capacity in 0\.2 s"):
        reg.add(ADMIN, "slow", "hanging", {})
    assert recorded(engine) == ["local"]


def test_show_answers_without_the_capacity_of_a_backend_that_does_not_answer(
    reg: CloudRegistry, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    clouds.record(engine, name="slow", connector="hanging", options={})
    monkeypatch.setattr(registry, "SHOW_PROBE_TIMEOUT", 0.2)
    shown = reg.show(ALICE, "slow")
    assert shown.capacity is None and shown.capacity_error == "the backend did not answer in 0.2 s"


def test_show_says_why_a_failing_backend_has_no_capacity(
    reg: CloudRegistry, fake: FakeConnector
) -> None:
    fake.ex_fail_next("capacity", BackendUnavailable("LXD at unix:///x: refused"))
    shown = reg.show(ALICE, "local")
    assert shown.capacity is None and shown.capacity_error == "LXD at unix:///x: refused"
    assert reg.show(ALICE, "local").capacity is not None  # it answers again


def test_a_disabled_cloud_keeps_why_is_hidden_from_users_and_enabling_clears_it(
    reg: CloudRegistry, fake_namespace: str
) -> None:
    reg.add(ADMIN, "lab", "fake", {"namespace": fake_namespace})
    off = reg.update(ADMIN, "lab", enabled=False, note="disk replaced on Tuesday")
    assert (off.enabled, off.note) == (False, "disk replaced on Tuesday")
    assert names(reg.list(ADMIN)) == ["lab", "local"]
    assert [(v.name, v.enabled) for v in reg.list(ADMIN)] == [("lab", False), ("local", True)]
    assert names(reg.list(ALICE)) == ["local"]
    with pytest.raises(NotFound, match="no cloud called 'lab'"):
        reg.show(ALICE, "lab")
    assert not clouds.get(reg.engine, "lab").enabled  # what placement reads
    with pytest.raises(Invalid, match="enabling it clears the note"):
        reg.update(ADMIN, "lab", enabled=True, note="back")
    on = reg.update(ADMIN, "lab", enabled=True)
    assert (on.enabled, on.note) == (True, None)
    with pytest.raises(Invalid, match="is enabled: a note says why"):
        reg.update(ADMIN, "lab", note="why not")
    with pytest.raises(Invalid, match="at most 1000 characters"):
        reg.update(ADMIN, "lab", enabled=False, note="x" * 1001)
    assert reg.show(ADMIN, "lab").enabled
    with pytest.raises(NotFound):
        reg.update(ADMIN, "nosuch", priority=1)


def test_changed_options_are_probed_and_drop_the_cached_connector(
    reg: CloudRegistry, pool: ConnectorPool, fake_namespace: str
) -> None:
    reg.add(ADMIN, "lab", "secretive", {"namespace": fake_namespace, **SECRETS})
    before = pool("lab")
    assert reg.update(ADMIN, "lab", priority=7).priority == 7
    assert pool("lab") is before  # nothing the connector uses changed
    reg.update(ADMIN, "lab", options={"secret": "rotated", "password": registry.clouds.REDACTED})
    assert pool("lab") is not before
    kept = clouds.get(reg.engine, "lab").options
    assert (kept["secret"], kept["password"]) == ("rotated", SECRETS["password"])
    FakeConnector(namespace=fake_namespace).ex_fail_next("capacity", BackendUnavailable("down"))
    with pytest.raises(BackendUnavailable, match="down"):
        reg.update(ADMIN, "lab", options={"secret": "again"})
    assert clouds.get(reg.engine, "lab").options["secret"] == "rotated"


def test_no_view_ever_holds_a_credential(
    reg: CloudRegistry, engine: Engine, fake_namespace: str
) -> None:
    views: list[Any] = [
        reg.add(ADMIN, "lab", "secretive", {"namespace": fake_namespace, **SECRETS}),
        reg.show(ADMIN, "lab"),
        reg.show(ALICE, "lab"),
        *reg.list(ADMIN),
        *reg.list(ALICE),
        reg.update(ADMIN, "lab", priority=3),
        reg.update(ADMIN, "lab", enabled=False, note="rotating keys"),
        reg.remove(ADMIN, "lab"),
    ]
    text = json.dumps([v.to_dict() for v in views])
    leaked = [value for value in SECRETS.values() if value in text or value[:20] in text]
    assert not leaked
    assert views[1].options == {
        "namespace": fake_namespace,
        "secret": "********",
        "password": "********",
        "client_key_pem": "********",
    }


def test_removal_is_refused_while_instances_or_volumes_live_there(
    reg: CloudRegistry, engine: Engine, pool: ConnectorPool, fake_namespace: str
) -> None:
    reg.add(ADMIN, "lab", "fake", {"namespace": fake_namespace + "-lab"})
    instances = InstanceService(engine, owner="alice", connectors=pool, name_prefix="t")
    volumes = VolumeService(engine, owner="alice", connectors=pool, instances=instances)
    (one, two) = instances.run(RunRequest(image="debian-12", count=2, cloud="lab"))
    volume = volumes.create("data", size_bytes=1 << 30, cloud="lab")
    assert (reg.show(ALICE, "lab").instances, reg.show(ALICE, "lab").volumes) == (2, 1)
    with pytest.raises(Conflict, match=r"still has 2 instance\(s\) and 1 volume\(s\)"):
        reg.remove(ADMIN, "lab")
    instances.kill(one.id)
    instances.kill(two.id)
    with pytest.raises(Conflict, match=r"still has 1 volume\(s\) the store"):
        reg.remove(ADMIN, "lab")
    volumes.delete(volume.id)
    gone = reg.remove(ADMIN, "lab")
    assert gone.name == "lab" and recorded(engine) == ["local"]
    with session_scope(engine) as session:  # what it kept of the past there went with it
        left = session.scalar(
            select(func.count()).select_from(InstanceRecord).where(InstanceRecord.cloud == "lab")
        )
    assert left == 0
    with pytest.raises(NotFound):
        pool("lab")  # the connector was forgotten with it
    with pytest.raises(NotFound):
        reg.remove(ADMIN, "lab")
    again = reg.add(ADMIN, "lab", "fake", {"namespace": fake_namespace})  # the name is free
    assert again.instances == 0


def test_an_lxd_is_enrolled_by_the_server_before_it_is_probed_and_recorded(
    engine: Engine, pool: ConnectorPool, fake_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring of enrolment (lxd_remote.enroll is proven against a real remote LXD in its
    own tests): what it is given, and that its options are what the cloud records."""
    monkeypatch.setitem(REGISTRY, "lxd", f"{__name__}:SecretiveFake")
    asked: list[tuple[str, dict[str, Any]]] = []

    def enroll(endpoint: str, **kwargs: Any) -> dict[str, Any]:
        asked.append((endpoint, kwargs))
        return {"namespace": fake_namespace, "client_key_pem": SECRETS["client_key_pem"]}

    reg = CloudRegistry(engine, pool, enroll=enroll)
    with pytest.raises(Invalid, match="give both or neither"):
        reg.add_lxd(ADMIN, "far", endpoint="https://10.1.2.3:8443", cert_pem="c")
    with pytest.raises(Conflict):
        reg.add_lxd(ADMIN, "local", endpoint="https://10.1.2.3:8443", password="pw")
    assert asked == []  # nothing was sent to the remote for a refused request
    view = reg.add_lxd(
        ADMIN, "far", endpoint="https://10.1.2.3:8443", password="pw", fingerprint="ab" * 32
    )
    assert asked == [
        (
            "https://10.1.2.3:8443",
            {
                "password": "pw",
                "cert_pem": None,
                "key_pem": None,
                "fingerprint": "ab" * 32,
                "profile": "default",
            },
        )
    ]
    assert view.connector == "lxd" and view.options is not None
    assert view.options["client_key_pem"] == "********"
    assert clouds.get(engine, "far").options["client_key_pem"] == SECRETS["client_key_pem"]
    reg.close()
