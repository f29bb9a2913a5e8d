"""What the Libcloud connector does that is EC2's own, checked through EC2's API (boto3, on the
same moto server as the contract suite): user-data as the instance's, teardown by tag, key
pairs and the security group made once, the instance type chosen, and the errors a site meets
when its credentials are refused or its endpoint does not answer."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email import message_from_string
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from stratuslab.cloud.base import InstanceSpec
from stratuslab.cloud.connectors import make_connector
from stratuslab.cloud.connectors.libcloud_compute import LibcloudConnector
from stratuslab.cloud.types import InstanceState
from stratuslab.errors import BackendUnavailable, Forbidden, Invalid, NotFound
from tests.cloud.connectors.moto_ec2 import IMAGE, KEY_ID, SECRET, MotoEc2
from tests.cloud.connectors.support import destroying
from tests.support import wait_until


def name() -> str:
    return f"test-{secrets.token_hex(4)}"


def ssh_key() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " someone@example.org"


@pytest.fixture
def cloud(ec2: MotoEc2) -> Iterator[LibcloudConnector]:
    with destroying(ec2.connector()) as made:
        assert isinstance(made, LibcloudConnector)
        yield made


def described(ec2: MotoEc2, connector: LibcloudConnector, instance: str) -> dict[str, Any]:
    found = ec2.client().describe_instances(InstanceIds=[connector.ex_instance_id(instance)])
    return dict(found["Reservations"][0]["Instances"][0])


def user_data_of(ec2: MotoEc2, connector: LibcloudConnector, instance: str) -> str:
    attribute = ec2.client().describe_instance_attribute(
        InstanceId=connector.ex_instance_id(instance), Attribute="userData"
    )
    return base64.b64decode(attribute["UserData"].get("Value", "")).decode()  # none: no Value


def test_user_data_is_the_instances_as_it_was_given(ec2: MotoEc2, cloud: LibcloudConnector) -> None:
    script = "#!/bin/sh\necho 'contextualized' > /root/ctx\n"
    spec = InstanceSpec(name=name(), image=IMAGE, user_data=script)
    cloud.create(spec)
    assert user_data_of(ec2, cloud, spec.name) == script
    raw = described(ec2, cloud, spec.name)
    assert {t["Key"]: t["Value"] for t in raw["Tags"]}["Name"] == spec.name
    assert raw["ImageId"] == ec2.image_id


def test_one_key_is_a_key_pair_named_by_its_fingerprint_and_reused(
    ec2: MotoEc2, cloud: LibcloudConnector
) -> None:
    key = ssh_key()
    first, second = (InstanceSpec(name=name(), image=IMAGE, ssh_keys=(key,)) for _ in "ab")
    cloud.create(first)
    cloud.create(second)
    pair = cloud.ex_key_pair_name(key)
    assert {described(ec2, cloud, s.name)["KeyName"] for s in (first, second)} == {pair}
    pairs = ec2.client().describe_key_pairs(Filters=[{"Name": "key-name", "Values": [pair]}])
    assert len(pairs["KeyPairs"]) == 1
    assert user_data_of(ec2, cloud, first.name) == ""  # the key went as a key pair only
    assert cloud.ex_key_pair_name(ssh_key()) != pair


def test_more_keys_than_a_key_pair_holds_travel_in_the_user_data(
    ec2: MotoEc2, cloud: LibcloudConnector
) -> None:
    keys = (ssh_key(), ssh_key())
    script = "#!/bin/sh\ntrue\n"
    spec = InstanceSpec(name=name(), image=IMAGE, ssh_keys=keys, user_data=script)
    cloud.create(spec)
    assert described(ec2, cloud, spec.name)["KeyName"] == cloud.ex_key_pair_name(keys[0])
    parts = list(message_from_string(user_data_of(ec2, cloud, spec.name)).walk())[1:]
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert keys[1] in parts[0].get_payload() and keys[0] not in parts[0].get_payload()
    assert parts[1].get_payload() == script


def test_a_site_key_pair_is_used_and_every_key_goes_in_the_user_data(ec2: MotoEc2) -> None:
    site = f"site-{secrets.token_hex(4)}"
    ec2.client().create_key_pair(KeyName=site)
    with destroying(ec2.connector(key_pair=site)) as connector:
        assert isinstance(connector, LibcloudConnector)
        key = ssh_key()
        spec = InstanceSpec(name=name(), image=IMAGE, ssh_keys=(key,))
        connector.create(spec)
        assert described(ec2, connector, spec.name)["KeyName"] == site
        assert key in user_data_of(ec2, connector, spec.name)


def test_teardown_by_tag_destroys_exactly_the_tagged_instances(
    ec2: MotoEc2, cloud: LibcloudConnector
) -> None:
    run, other_run = f"r-{secrets.token_hex(4)}", f"r-{secrets.token_hex(4)}"
    mine = [
        cloud.create(InstanceSpec(name=name(), image=IMAGE, tags={"run": run, "owner": "alice"}))
        for _ in range(3)
    ]
    bobs = cloud.create(
        InstanceSpec(name=name(), image=IMAGE, tags={"run": other_run, "owner": "bob"})
    )
    near = cloud.create(  # a value EC2 would match as a wildcard pattern, were it sent as one
        InstanceSpec(name=name(), image=IMAGE, tags={"run": run[:-1] + "?", "owner": "alice"})
    )
    cloud.stop(mine[0].name, timeout=10)  # a stopped one is torn down too
    for instance in cloud.list_instances(tags={"run": run}, addresses=False):
        cloud.destroy(instance.name)
    assert cloud.list_instances(tags={"run": run}) == []
    for gone in mine:
        with pytest.raises(NotFound):
            cloud.get(gone.name)
    ids = [cloud.ex_instance_id(i.name) for i in (bobs, near)]
    states = ec2.client().describe_instances(InstanceIds=ids)["Reservations"]
    assert {i["State"]["Name"] for r in states for i in r["Instances"]} == {"running"}
    assert [i.name for i in cloud.list_instances(tags={"owner": "bob", "run": other_run})] == [
        bobs.name
    ]


def test_a_destroyed_instance_is_gone_and_its_name_free_again(
    ec2: MotoEc2, cloud: LibcloudConnector
) -> None:
    spec = InstanceSpec(name=name(), image=IMAGE)
    first = cloud.ex_instance_id(cloud.create(spec).name)
    cloud.destroy(spec.name)
    terminated = ec2.client().describe_instances(InstanceIds=[first])["Reservations"]
    assert terminated[0]["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")
    again = cloud.create(spec)  # terminated counts as gone: the name is free
    assert again.state == InstanceState.RUNNING
    assert cloud.ex_instance_id(spec.name) != first


def test_the_smallest_type_that_fits_is_chosen_unless_the_cloud_sets_one(
    ec2: MotoEc2, cloud: LibcloudConnector
) -> None:
    small = cloud.create(InstanceSpec(name=name(), image=IMAGE, cpu=1, ram_mb=256))
    assert described(ec2, cloud, small.name)["InstanceType"] == "t2.nano"  # 1 vCPU, 512 MiB
    bigger = cloud.create(InstanceSpec(name=name(), image=IMAGE, cpu=2, ram_mb=3000))
    kind = described(ec2, cloud, bigger.name)["InstanceType"]
    assert kind == "t3a.medium"  # 2 vCPUs, 4 GiB, and the cheapest of those that small
    assert (cloud.get(bigger.name).cpu, cloud.get(bigger.name).ram_mb) == (2, 4096)
    with destroying(ec2.connector(size="m5.large")) as fixed:
        made = fixed.create(InstanceSpec(name=name(), image=IMAGE, cpu=1, ram_mb=256))
        assert (made.cpu, made.ram_mb) == (2, 8192)
    with pytest.raises(Invalid, match=r"no instance type 'x9\.huge'"):
        ec2.connector(size="x9.huge").create(InstanceSpec(name=name(), image=IMAGE))
    with pytest.raises(Invalid, match="no x86_64 instance type with 4096 vCPUs"):
        cloud.create(InstanceSpec(name=name(), image=IMAGE, cpu=4096))


def test_images_are_found_by_ami_id_or_by_the_accounts_own_names(
    ec2: MotoEc2, cloud: LibcloudConnector
) -> None:
    assert cloud.get_image(IMAGE).fingerprint == ec2.image_id
    assert cloud.get_image(ec2.image_id).name == IMAGE
    public = ec2.client().describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]
    with pytest.raises(NotFound):  # another owner's image goes by its id, never by its name
        cloud.get_image(public["Name"])
    assert cloud.get_image(public["ImageId"]).fingerprint == public["ImageId"]
    with pytest.raises(NotFound):
        cloud.get_image("ami-00000000000000000")


def test_the_security_group_is_made_once_with_ssh_open(ec2: MotoEc2) -> None:
    group = f"stratus-{secrets.token_hex(4)}"
    for _ in range(2):  # two connectors, as two server processes: one group
        with destroying(ec2.connector(security_group=group)) as connector:
            made = connector.create(InstanceSpec(name=name(), image=IMAGE))
            assert isinstance(connector, LibcloudConnector)
            groups = described(ec2, connector, made.name)["SecurityGroups"]
            assert [g["GroupName"] for g in groups] == [group]
    found = ec2.client().describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [group]}]
    )["SecurityGroups"]
    assert len(found) == 1
    ports = [(p["FromPort"], p["ToPort"]) for p in found[0]["IpPermissions"]]
    assert ports == [(22, 22)]


def test_the_registry_builds_it_from_a_clouds_recorded_options(ec2: MotoEc2) -> None:
    options = {
        "provider": "ec2",
        "region": ec2.region,
        "key_id": KEY_ID,
        "secret": SECRET,
        "endpoint": ec2.endpoint,
    }
    connector = make_connector("libcloud", options)
    assert connector.kind == "libcloud" and connector.capacity().cpus is None
    with pytest.raises(Invalid, match="bad options"):
        make_connector("libcloud", {**options, "zone": "a"})


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"provider": "openstack"}, "provider 'openstack' is not supported yet"),
        ({"region": "mars-north-1"}, "EC2 region 'mars-north-1'"),
        ({"endpoint": "ftp://127.0.0.1:1"}, "give http"),
        ({"endpoint": "http://127.0.0.1:1/api"}, "give no path"),
        ({"endpoint": "http://127.0.0.1:99999"}, "endpoint"),
    ],
)
def test_bad_options_are_refused_before_anything_is_asked(
    ec2: MotoEc2, options: dict[str, str], said: str
) -> None:
    with pytest.raises(Invalid, match=said):
        ec2.connector(**options)


def test_an_unreachable_endpoint_is_unavailable_and_named(ec2: MotoEc2) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    connector = ec2.connector(endpoint=endpoint)
    with pytest.raises(BackendUnavailable, match=f"EC2 eu-west-1 at {endpoint} cannot be reached"):
        connector.capacity()
    with pytest.raises(BackendUnavailable, match="cannot be reached"):
        connector.create(InstanceSpec(name=name(), image=IMAGE))


@pytest.fixture(scope="module")
def strict_ec2() -> Iterator[str]:
    """moto's server checking every request's credentials (none are known to it), in a
    process of its own: the setting is read when moto is imported."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.spawns
def test_refused_credentials_are_forbidden_naming_the_cloud_not_the_credentials(
    ec2: MotoEc2, strict_ec2: str
) -> None:
    connector = ec2.connector(endpoint=strict_ec2)
    with pytest.raises(Forbidden) as refused:
        connector.capacity()  # what registering a cloud asks first
    message = str(refused.value)
    assert f"EC2 eu-west-1 at {strict_ec2} refused the credentials recorded for it" in message
    assert "check the key id and secret" in message
    # A refusal can reach users (a run's abort): it names neither the key id nor the secret.
    assert SECRET not in message and KEY_ID not in message
    with pytest.raises(Forbidden, match="refused the credentials"):
        connector.create(InstanceSpec(name=name(), image=IMAGE))


def test_a_site_registers_ec2_and_instances_burst_there_with_their_user_data(
    ec2: MotoEc2, api: Any
) -> None:
    """What `stratus cloud add aws --libcloud ec2 ... --secret-stdin` sends, through the API;
    then, local being full, an instance asked anywhere starts on EC2, contextualized by its
    user-data, and its kill terminates it there."""
    added = api.post(
        "/api/clouds",
        json={
            "name": "aws",
            "connector": "libcloud",
            "options": {
                "provider": "ec2",
                "region": ec2.region,
                "key_id": KEY_ID,
                "secret": SECRET,
                "endpoint": ec2.endpoint,
            },
            "priority": 500,
        },
    )
    assert added.status_code == 201, added.text
    assert SECRET not in added.text and added.json()["options"]["secret"] == "********"
    assert api.patch("/api/clouds/local", json={"max_instances": 0}).status_code == 200
    script = "#!/bin/sh\necho contextualized > /etc/motd\n"
    answer = api.post("/api/instances", json={"image": IMAGE, "user_data": script})
    assert answer.status_code == 202, answer.text
    (instance,) = answer.json()["instances"]
    assert instance["cloud"] == "aws"
    running = wait_until(
        lambda: (
            (v := api.get(f"/api/instances/{instance['id']}").json())["state"] == "running" and v
        ),
        timeout=60,
        what="the EC2 instance running",
    )
    connector = ec2.connector()
    assert user_data_of(ec2, connector, running["name"]) == script
    assert api.delete(f"/api/instances/{instance['id']}").status_code == 200
    wait_until(
        lambda: all(i.name != running["name"] for i in connector.list_instances()),
        timeout=60,
        what="the EC2 instance terminated",
    )
