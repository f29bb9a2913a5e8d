"""A real EC2 API on loopback for the Libcloud connector's tests: moto's server, in this
process (a thread), on a free port. It keeps EC2's state in memory for the test session; every
test makes its instances under names and tags of its own, and the ``connector`` fixture
terminates them. ``debian-12`` is an AMI of the account, as a site would register its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from stratuslab.cloud.connectors.libcloud_compute import LibcloudConnector

REGION = "eu-west-1"
KEY_ID, SECRET = "AKIASTRATUSTEST00000", "stratus-test-secret"
IMAGE = "debian-12"


@dataclass(frozen=True)
class MotoEc2:
    endpoint: str
    region: str
    image_id: str

    def connector(self, **options: Any) -> LibcloudConnector:
        settings: dict[str, Any] = {
            "provider": "ec2",
            "region": self.region,
            "key_id": KEY_ID,
            "secret": SECRET,
            "endpoint": self.endpoint,
        }
        return LibcloudConnector(**{**settings, **options})

    def client(self) -> Any:
        """boto3's EC2 client on the same account, to check what the connector did."""
        return boto3.client(
            "ec2",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )


@contextmanager
def moto_ec2() -> Iterator[MotoEc2]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        ec2 = boto3.client(
            "ec2",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )
        made = ec2.register_image(
            Name=IMAGE,
            Architecture="x86_64",
            RootDeviceName="/dev/xvda",
            VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 2}}],
        )
        yield MotoEc2(endpoint=endpoint, region=REGION, image_id=made["ImageId"])
    finally:
        server.stop()
