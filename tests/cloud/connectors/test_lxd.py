"""LXD connector behaviours that real LXD shows only under unlucky timing, scripted here."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from stratuslab.cloud.base import InstanceSpec
from stratuslab.cloud.connectors.lxd import CAPACITY_TIMEOUT, LxdConnector
from stratuslab.cloud.connectors.lxd_api import OPERATION_TIMEOUT, REQUEST_TIMEOUT, LxdApi
from stratuslab.cloud.types import InstanceState
from stratuslab.errors import BackendError, BackendUnavailable, NotFound, NotSupported


def test_a_clean_stop_that_times_out_is_forced() -> None:
    status = {"now": "Running"}
    puts: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "PUT" and path.endswith("/state"):
            body = json.loads(request.content)
            puts.append(body)
            return httpx.Response(
                202, json={"type": "async", "operation": f"/1.0/operations/{len(puts)}"}
            )
        if path == "/1.0/operations/1/wait":  # the clean stop: systemd was still booting
            failure = {"status_code": 400, "err": "Failed shutting down instance: timeout"}
            return httpx.Response(200, json={"type": "sync", "metadata": failure})
        if path == "/1.0/operations/2/wait":  # the forced stop
            status["now"] = "Stopped"
            return httpx.Response(200, json={"type": "sync", "metadata": {"status_code": 200}})
        if path == "/1.0/instances/box":
            return httpx.Response(
                200,
                json={
                    "type": "sync",
                    "metadata": {"name": "box", "status": status["now"], "config": {}},
                },
            )
        if path == "/1.0/instances/box/state":
            return httpx.Response(200, json={"type": "sync", "metadata": {"status": status["now"]}})
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    connector = LxdConnector(
        endpoint="unix:///x", api=LxdApi("unix:///x", transport=httpx.MockTransport(handler))
    )
    assert connector.stop("box", timeout=1).state == InstanceState.STOPPED
    assert [p["force"] for p in puts] == [False, True]


def test_a_state_query_that_fails_once_is_asked_again() -> None:
    """LXD fails now and then to read the network of a container that is starting."""
    calls = {"state": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0/instances/box/state":
            calls["state"] += 1
            if calls["state"] == 1:
                message = "Failed to retrieve network information: bad file descriptor"
                return httpx.Response(
                    500, json={"type": "error", "error": message, "error_code": 500}
                )
            network = {
                "eth0": {
                    "addresses": [{"family": "inet", "scope": "global", "address": "10.1.2.3"}]
                }
            }
            return httpx.Response(
                200, json={"type": "sync", "metadata": {"status": "Running", "network": network}}
            )
        if request.url.path == "/1.0/instances/box":
            return httpx.Response(
                200,
                json={
                    "type": "sync",
                    "metadata": {"name": "box", "status": "Running", "config": {}},
                },
            )
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    connector = LxdConnector(
        endpoint="unix:///x", api=LxdApi("unix:///x", transport=httpx.MockTransport(handler))
    )
    assert connector.wait_for_address("box", timeout=5).addresses == ("10.1.2.3",)
    assert calls["state"] >= 2


NETWORK_ERROR = "Failed to retrieve network information: bad file descriptor"
RUNNING_STATE = {
    "status": "Running",
    "network": {
        "eth0": {"addresses": [{"family": "inet", "scope": "global", "address": "10.1.2.3"}]}
    },
}
FINGERPRINT = "ab" * 32


def sync(metadata: object) -> httpx.Response:
    return httpx.Response(200, json={"type": "sync", "metadata": metadata})


def error(message: str, code: int) -> httpx.Response:
    return httpx.Response(code, json={"type": "error", "error": message, "error_code": code})


def on(handler: Callable[[httpx.Request], httpx.Response]) -> LxdConnector:
    return LxdConnector(
        endpoint="unix:///x", api=LxdApi("unix:///x", transport=httpx.MockTransport(handler))
    )


def box(status: str = "Running", **extra: object) -> dict[str, object]:
    config = {"user.stratus.id": "i-1", "user.stratus.run": "r-1", "limits.cpu": "1"}
    return {"name": "box", "status": status, "config": config, **extra}


def test_an_instance_lxd_lists_without_its_state_is_asked_for_alone() -> None:
    """While a container starts, LXD may fail to render its state in a listing and send only
    {name, status: Error}: without its tags, reconciliation would take it for gone."""
    asked = {"box": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0":  # an LXD that cannot filter: recursion=2, as before 4.0
            return sync({"api_extensions": []})
        if request.url.path == "/1.0/instances":
            other = {"name": "other", "status": "Running", "config": {}, "state": {}}
            return sync([{"name": "box", "status": "Error", "config": None}, other])
        if request.url.path == "/1.0/instances/box":
            asked["box"] += 1
            if asked["box"] == 1:  # the same trouble, once more
                return error(NETWORK_ERROR, 500)
            return sync(box(state=RUNNING_STATE))
        return error("not found", 404)

    (found,) = on(handler).list_instances(tags={"run": "r-1"})
    assert (found.name, found.state, found.addresses) == (
        "box",
        InstanceState.RUNNING,
        ("10.1.2.3",),
    )
    assert found.tags == {"id": "i-1", "run": "r-1"}
    assert asked["box"] == 2


def test_an_instance_deleted_between_listing_and_asking_is_left_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0/instances":
            return sync([{"name": "box", "status": "Error"}])
        return error("Instance not found", 404)

    assert on(handler).list_instances() == []


def test_an_unreachable_lxd_fails_the_address_wait_at_once() -> None:
    """Nothing to wait for when LXD is down: BackendUnavailable (exit 69), not a 120 s poll."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ConnectError("connection refused", request=request)

    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        on(handler).wait_for_address("box", timeout=120)
    assert calls["n"] == 1 and time.monotonic() - started < 10  # not the 120 s poll


def test_a_request_lxd_does_not_answer_in_time_is_not_sent_again() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(BackendError, match="did not answer") as caught:
        on(handler).get("box")
    assert not isinstance(caught.value, BackendUnavailable)
    assert calls["n"] == 1


def test_an_error_lxd_keeps_answering_with_is_raised_after_a_few_tries() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return error(NETWORK_ERROR, 500)

    with pytest.raises(BackendError, match="Failed to retrieve network information"):
        on(handler).wait_for_address("box", timeout=120)
    assert calls["n"] == 6  # the first try and five more


def test_get_asks_once_and_the_address_wait_once_more_than_it_polls() -> None:
    requests: list[str] = []
    polls = {"state": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.url.path}?{request.url.query.decode()}")
        if request.url.path == "/1.0/instances/box/state":
            polls["state"] += 1
            return sync(RUNNING_STATE if polls["state"] == 3 else {"status": "Running"})
        if request.url.path == "/1.0/instances/box":
            if request.url.params.get("recursion") == "1":
                return sync(box(state=RUNNING_STATE))
            return sync(box())
        return error("not found", 404)

    connector = on(handler)
    instance = connector.get("box")
    assert (instance.addresses, instance.cpu, instance.tags["id"]) == (("10.1.2.3",), 1, "i-1")
    assert requests == ["/1.0/instances/box?recursion=1"]
    requests.clear()
    ready = connector.wait_for_address("box", timeout=5)
    assert ready.addresses == ("10.1.2.3",) and ready.tags["run"] == "r-1"
    assert requests == ["/1.0/instances/box/state?"] * 3 + ["/1.0/instances/box?"]


def test_create_uses_the_fingerprint_it_is_given_without_looking_it_up() -> None:
    requests: list[str] = []
    created: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and request.url.path == "/1.0/instances":
            created.append(json.loads(request.content))
            return sync(None)
        if request.method == "PUT":
            return sync(None)
        if request.url.path == "/1.0/instances/box":
            return sync(box(state=RUNNING_STATE))
        return error("not found", 404)

    made = on(handler).create(InstanceSpec(name="box", image=FINGERPRINT))
    assert made.state == InstanceState.RUNNING
    assert created[0]["source"] == {"type": "image", "fingerprint": FINGERPRINT}
    assert requests == [
        "GET /1.0/profiles/default",  # its NICs, to filter (see the test below)
        "POST /1.0/instances",
        "PUT /1.0/instances/box/state",
        "GET /1.0/instances/box",
    ]


def test_every_instance_gets_the_profiles_bridged_nics_as_its_own_with_spoofing_filtered() -> None:
    """Whatever profile it is given, the connector filters MAC, IPv4 and IPv6 spoofing on each
    NIC on a bridge LXD manages; a NIC LXD cannot filter so is left to the profile."""
    profile = {
        "root": {"type": "disk", "path": "/", "pool": "stratus"},
        "eth0": {"type": "nic", "name": "eth0", "network": "stratusbr0"},
        "eth1": {"type": "nic", "name": "eth1", "nictype": "bridged", "parent": "stratusbr0"},
        "eth2": {"type": "nic", "name": "eth2", "nictype": "bridged", "parent": "br-host"},
        "eth3": {"type": "nic", "name": "eth3", "nictype": "macvlan", "parent": "enp1s0"},
    }
    networks = {
        "stratusbr0": {"type": "bridge", "managed": True},
        "br-host": {"type": "bridge", "managed": False},  # no DHCP of LXD's to reserve from
    }
    created: list[dict[str, object]] = []
    profile_reads = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/1.0/profiles/stratus":
            profile_reads.append(path)
            return sync({"name": "stratus", "devices": profile})
        if path.startswith("/1.0/networks/"):
            return sync(networks[path.rsplit("/", 1)[1]])
        if request.method == "POST" and path == "/1.0/instances":
            created.append(json.loads(request.content))
            return sync(None)
        if request.method == "PUT":
            return sync(None)
        if path.startswith("/1.0/instances/"):
            return sync(box(state=RUNNING_STATE))
        return error("not found", 404)

    connector = LxdConnector(
        endpoint="unix:///x",
        profile="stratus",
        api=LxdApi("unix:///x", transport=httpx.MockTransport(handler)),
    )
    for name in ("box", "box2"):
        connector.create(InstanceSpec(name=name, image=FINGERPRINT))
    filtering = {
        "security.mac_filtering": "true",
        "security.ipv4_filtering": "true",
        "security.ipv6_filtering": "true",
    }
    assert created[0]["profiles"] == ["stratus"]
    assert created[0]["devices"] == {
        "eth0": {**profile["eth0"], **filtering},
        "eth1": {**profile["eth1"], **filtering},
    }
    assert created[1]["devices"] == created[0]["devices"]
    assert profile_reads == ["/1.0/profiles/stratus"]  # once per connector


def test_create_with_an_unknown_fingerprint_says_not_found() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/1.0/instances":
            return error("Image not provided for instance creation", 500)
        if request.url.path == "/1.0/images":
            return sync([])
        return error("not found", 404)

    with pytest.raises(NotFound, match="no image called"):
        on(handler).create(InstanceSpec(name="box", image=FINGERPRINT))


FILTERING = {"api_extensions": ["api_filtering"]}
RUN_FILTER = "config.user.stratus.run eq r-1 or status eq Error"


def listing(*instances: dict[str, object]) -> Callable[[httpx.Request], httpx.Response]:
    """An LXD that filters, holding ``instances``; it answers each state with an address."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/1.0":
            return sync(FILTERING)
        if path == "/1.0/instances":
            return sync(list(instances))
        if path.endswith("/state"):
            return sync(RUNNING_STATE)
        return error("not found", 404)

    return handler


def tagged(name: str, **tags: str) -> dict[str, object]:
    config = {f"user.stratus.{k}": v for k, v in tags.items()}
    return {"name": name, "status": "Running", "config": config}


def test_a_filtered_listing_asks_lxd_to_filter_then_reads_only_the_states_it_needs() -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    handler = listing(tagged("box", run="r-1"))

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, dict(request.url.params)))
        return handler(request)

    connector = on(recording)
    (found,) = connector.list_instances(tags={"run": "r-1"})
    assert (found.name, found.addresses) == ("box", ("10.1.2.3",))
    assert seen == [
        ("/1.0", {}),
        ("/1.0/instances", {"recursion": "1", "filter": RUN_FILTER}),
        ("/1.0/instances/box/state", {}),
    ]
    seen.clear()
    connector.list_instances(tags={"run": "r-1"}, addresses=False)
    assert seen == [  # the extensions are asked once; no state without addresses
        ("/1.0/instances", {"recursion": "1", "filter": RUN_FILTER})
    ]


def test_lxd_is_asked_only_what_it_can_match_safely_and_the_rest_is_compared_here() -> None:
    """LXD matches a case-insensitive regular expression, word by word: 'r.1' also finds
    'rx1', 'R.1' finds 'r.1', and 'a b' or 'a+b' cannot be asked at all."""
    filters: list[str | None] = []
    handler = listing(
        tagged("exact", run="r.1", note="a b"),
        tagged("dot", run="rx1", note="a b"),
        tagged("case", run="R.1", note="a b"),
        tagged("spaces", run="r.1", note="a  b"),
    )

    def recording(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0/instances":
            filters.append(request.url.params.get("filter"))
        return handler(request)

    connector = on(recording)
    found = connector.list_instances(tags={"run": "r.1", "note": "a b"}, addresses=False)
    assert [i.name for i in found] == ["exact"]
    assert [i.name for i in connector.list_instances(tags={"note": "a+b"})] == []
    assert filters == ["config.user.stratus.run eq r.1 or status eq Error", None]


def test_every_instance_carrying_a_tag_key_is_listed_whatever_its_value() -> None:
    filters: list[str | None] = []
    handler = listing(tagged("one", run="r-1"), tagged("two", run="r 2"), tagged("none", id="x"))

    def recording(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0/instances":
            filters.append(request.url.params.get("filter"))
        return handler(request)

    found = on(recording).list_instances(has_tag="run", addresses=False)
    assert [(i.name, i.tags["run"]) for i in found] == [("one", "r-1"), ("two", "r 2")]
    assert filters == ["not config.user.stratus.run eq ^$ or status eq Error"]


def test_an_instance_lxd_could_not_render_is_asked_for_by_the_filter_and_read_alone() -> None:
    asked: list[str] = []
    handler = listing({"name": "box", "status": "Error"}, tagged("other", run="r-2"))

    def recording(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/1.0/instances/box":
            return sync(box(state=RUNNING_STATE))
        return handler(request)

    (found,) = on(recording).list_instances(tags={"run": "r-1"}, addresses=False)
    assert (found.name, found.state, found.tags["run"]) == ("box", InstanceState.RUNNING, "r-1")
    assert "/1.0/instances/box" in asked


def test_without_api_filtering_the_listing_is_filtered_here() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0":
            return sync({"api_extensions": []})
        if request.url.path == "/1.0/instances":
            seen.append(dict(request.url.params))
            return sync([{**box(), "state": RUNNING_STATE}, {**tagged("other", run="r-2")}])
        return error("not found", 404)

    (found,) = on(handler).list_instances(tags={"run": "r-1"})
    assert (found.name, found.addresses) == ("box", ("10.1.2.3",))
    assert seen == [{"recursion": "2"}]


def test_a_slow_resources_request_fails_clearly_within_its_bound() -> None:
    """LXD once took over 60 s to answer GET /1.0/resources: capacity must not wait so long.
    The transport stands for an LXD that answers after 75 s: it times out any request that
    would wait less, as a real socket does."""
    bounds: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0/resources":
            bounds.append(request.extensions["timeout"]["read"])
            if bounds[-1] < 75:
                raise httpx.ReadTimeout("timed out", request=request)
            return sync({"cpu": {"total": 2}, "memory": {"total": 2**30, "used": 0}})
        return error("not found", 404)

    with pytest.raises(
        BackendError, match=r"LXD did not answer GET /1.0/resources within 10 s"
    ) as caught:
        on(handler).capacity()
    assert bounds == [CAPACITY_TIMEOUT] and CAPACITY_TIMEOUT <= 10
    assert not isinstance(caught.value, BackendUnavailable)


def test_every_request_and_operation_wait_is_bounded() -> None:
    """Creating, stopping, destroying, listing and reading capacity: no request may wait
    without a bound, and no background operation for longer than OPERATION_TIMEOUT (plus a
    clean stop's own timeout)."""
    reads: list[float] = []
    waits: list[int] = []
    status = {"now": "Running"}

    def handler(request: httpx.Request) -> httpx.Response:
        reads.append(request.extensions["timeout"]["read"])
        path = request.url.path
        if path.endswith("/wait"):
            waits.append(int(request.url.params["timeout"]))
            if request.url.path == "/1.0/operations/stop/wait":
                status["now"] = "Stopped"
            return sync({"status_code": 200})
        if request.method == "POST" and path == "/1.0/instances":
            return httpx.Response(202, json={"type": "async", "operation": "/1.0/operations/1"})
        if request.method == "PUT":
            return httpx.Response(202, json={"type": "async", "operation": "/1.0/operations/stop"})
        if request.method == "DELETE":
            return sync(None)
        if path == "/1.0":
            return sync(FILTERING)
        if path == "/1.0/instances":
            return sync([box()])
        if path == "/1.0/resources":
            return sync({"cpu": {"total": 2}, "memory": {"total": 2**30, "used": 0}})
        if path == "/1.0/instances/box":
            return sync(box(status["now"], state=RUNNING_STATE))
        if path.endswith("/state"):
            return sync(RUNNING_STATE)
        return error("not found", 404)

    connector = on(handler)
    connector.create(InstanceSpec(name="box", image=FINGERPRINT))
    connector.list_instances(tags={"run": "r-1"})
    connector.capacity()
    connector.stop("box", timeout=5)
    connector.destroy("box")
    # a plain request: REQUEST_TIMEOUT; an operation: its wait, and the answer after it
    assert reads and all(0 < read <= OPERATION_TIMEOUT + 5 + 5 for read in reads)
    assert REQUEST_TIMEOUT in reads
    assert waits and max(waits) <= OPERATION_TIMEOUT + 5


def test_an_export_is_bounded_by_the_images_size_and_a_split_image_is_refused(
    tmp_path: Path,
) -> None:
    """What LXD sends for an export is streamed to the file: more than the image's size is
    refused and the file removed; a split image (LXD answers a multipart form) is not one
    tarball, so it is refused before anything is written."""
    fingerprint = "ab" * 32
    answers = {"body": b"x" * 100, "type": "application/octet-stream"}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/1.0/images/aliases/big":
            return httpx.Response(200, json={"type": "sync", "metadata": {"target": fingerprint}})
        if path == f"/1.0/images/{fingerprint}":
            image = {"fingerprint": fingerprint, "size": 64, "properties": {}}
            return httpx.Response(200, json={"type": "sync", "metadata": image})
        if path == f"/1.0/images/{fingerprint}/export":
            body = iter([answers["body"][:50], answers["body"][50:]])  # no Content-Length
            return httpx.Response(200, headers={"Content-Type": answers["type"]}, content=body)
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    connector = LxdConnector(
        endpoint="unix:///x", api=LxdApi("unix:///x", transport=httpx.MockTransport(handler))
    )
    dest = tmp_path / "image.tar"
    with pytest.raises(BackendError, match="LXD sent more than 64 bytes"):
        connector.export_image("big", dest)
    assert not dest.exists()
    answers["type"] = "multipart/form-data; boundary=x"
    with pytest.raises(NotSupported, match=r"'big' .* is a split image"):
        connector.export_image("big", dest)
    assert not dest.exists()
    answers.update(body=b"y" * 64, type="application/octet-stream")
    assert connector.export_image("big", dest).fingerprint == fingerprint
    assert dest.read_bytes() == b"y" * 64
