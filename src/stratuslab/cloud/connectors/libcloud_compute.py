"""Public clouds through Apache Libcloud's compute API: EC2 first (and any EC2-compatible
server, given its ``endpoint``).

What maps to what, on EC2:

- an instance's name is its ``Name`` tag (unique per cloud: create refuses a name a live
  instance has); the project's tags are EC2 tags ``stratus.KEY`` (as ``user.stratus.KEY`` on
  LXD), filtered server-side and compared exactly here;
- a size (``spec.cpu``/``spec.ram_mb``) is the smallest instance type of the region that fits
  them and the image's architecture, unless the cloud is configured with one ``size``;
- an image is an AMI, by id (``ami-...``) or by the name of one of the account's own AMIs;
- the first ssh key is an imported key pair named from the key's fingerprint (reused by every
  instance with that key) unless the cloud names its own ``key_pair``; further keys travel in
  the user-data as a ``#cloud-config`` part next to the user's;
- every instance is in one security group (``security_group``, default ``stratus``), made once
  with ssh open when missing;
- user-data is EC2 user-data, which cloud-init reads at first boot;
- terminated (and shutting-down) instances are gone: not listed, their names free.

EC2 says nothing of free capacity through its API: :meth:`capacity` checks that the cloud
answers and accepts the credentials, and says ``None`` for every figure.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from libcloud.compute.base import Node, NodeImage, NodeSize

from stratuslab.cloud.base import (
    Capacity,
    Connector,
    Image,
    Instance,
    InstanceSpec,
)
from stratuslab.cloud.connectors.libcloud_access import Ec2Access
from stratuslab.cloud.connectors.libcloud_ec2 import (
    INSTANCE_TYPES,
    Ec2Driver,
    InstanceType,
    instance_filters,
    translated,
)
from stratuslab.cloud.connectors.libcloud_launch import (
    endpoint_parts,
    key_pair_name,
    smallest_fitting,
    to_image,
    user_data,
)
from stratuslab.cloud.types import InstanceState
from stratuslab.errors import (
    BackendError,
    Conflict,
    Invalid,
    NotFound,
    NotSupported,
    StratusError,
)

STATE_MAP: dict[str, InstanceState] = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.RUNNING,  # as LXD's Stopping: it runs until it has stopped
    "stopped": InstanceState.STOPPED,
    "shutting-down": InstanceState.GONE,  # being terminated: there is no way back
    "terminated": InstanceState.GONE,
}
LIVE_STATES = ("pending", "running", "stopping", "stopped")
PROVIDERS = ("ec2",)
TAG_PREFIX = "stratus."
NAME_TAG = "Name"
DEFAULT_SECURITY_GROUP = "stratus"
DEFAULT_RAM_MB = 1024  # what an instance gets when nobody asks: enough for cloud-init and apt
REQUEST_TIMEOUT = 30.0
CREATE_TIMEOUT = 300.0  # EC2 starts most instances within a minute
_POLL_FIRST, _POLL_MAX = 0.05, 2.0
_MAX_TAG_VALUE = 256  # EC2's bound on a tag's value


class LibcloudConnector(Ec2Access, Connector):
    """Instances on one region of a public cloud, through Libcloud."""

    kind = "libcloud"
    on_site_network = False  # a public cloud: nodes there would need the server's public URL
    capabilities = frozenset()  # reached by ssh; no exec, snapshots, images or volumes here

    def __init__(
        self,
        *,
        provider: str,
        region: str,
        key_id: str,
        secret: str,
        endpoint: str | None = None,
        size: str | None = None,
        security_group: str | None = None,
        key_pair: str | None = None,
    ) -> None:
        if provider not in PROVIDERS:
            raise Invalid(
                f"libcloud provider {provider!r} is not supported yet",
                hint=f"supported: {', '.join(PROVIDERS)}",
            )
        self.provider, self.region, self.key_id = provider, region, key_id
        self._secret = secret
        self.size, self.key_pair = size, key_pair
        self.security_group = security_group or DEFAULT_SECURITY_GROUP
        self._where = endpoint_parts(endpoint)
        self._region_key = f"{endpoint or 'aws'}/{region}"
        self.cloud = f"EC2 {region}" + (f" at {endpoint}" if endpoint else "")
        self._local = threading.local()  # a driver per thread: Libcloud's are not shared safely
        self._group_ready = False
        self._lock = threading.Lock()
        self._driver()  # an unknown region is refused here, before anything is asked

    # -- the contract ---------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        if spec.volumes:
            raise NotSupported(f"the {self.kind} connector has no volumes")
        for key, value in spec.tags.items():
            if len(value) > _MAX_TAG_VALUE:
                raise Invalid(f"tag {key}: EC2 keeps at most {_MAX_TAG_VALUE} characters")
        image = self._image(spec.image)
        size = self._choose_size(spec, image)
        if self._live(names=(spec.name,)):
            raise Conflict(f"an instance called {spec.name!r} already exists on {self.cloud}")
        keyname, extra_keys = self._keys(spec.ssh_keys)
        tags = {TAG_PREFIX + k: v for k, v in spec.tags.items() if v}
        with self._cleaning_up(spec.name), self._calling(f"starting instance {spec.name}"):
            node = self._driver().create_node(
                name=spec.name,
                size=NodeSize(size.name, size.name, size.ram_mb, 0, 0, 0, self._driver()),
                image=image,
                ex_keyname=keyname,
                ex_userdata=user_data(spec.user_data, extra_keys),
                ex_security_groups=[self._ensure_security_group()],
                ex_metadata=tags,
            )
        try:
            return self._wait(str(node.id), spec.name, ("running",), CREATE_TIMEOUT)
        except BaseException:
            self._terminate(str(node.id))
            raise

    def wait_for_address(self, name: str, timeout: float) -> Instance:
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        while True:
            instance = self.get(name)
            if instance.addresses:
                return instance
            if instance.state not in (InstanceState.RUNNING, InstanceState.PENDING):
                raise BackendError(f"instance {name} is {instance.state.value}, it gets no address")
            if time.monotonic() > deadline:
                raise BackendError(f"instance {name} got no IPv4 address within {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def start(self, name: str) -> Instance:
        node = self._node(name)
        if node.extra.get("status") != "running":
            with self._calling(f"starting instance {name}"):
                self._driver().start_node(node)
        return self._wait(str(node.id), name, ("running",), CREATE_TIMEOUT)

    def stop(self, name: str, *, timeout: float = 30.0) -> Instance:
        node = self._node(name)
        if node.extra.get("status") == "stopped":
            return self._to_instance(node)
        with self._calling(f"stopping instance {name}"):
            self._driver().stop_node(node)
        try:
            return self._wait(str(node.id), name, ("stopped",), timeout)
        except BackendError:  # not stopped in time: forced, as the contract says
            with self._calling(f"forcing instance {name} to stop"):
                self._ec2("StopInstances", {"InstanceId.1": str(node.id), "Force": "true"})
            return self._wait(str(node.id), name, ("stopped",), CREATE_TIMEOUT)

    def destroy(self, name: str) -> None:
        for node in self._live(names=(name,)):
            self._terminate(str(node.id))

    def get(self, name: str) -> Instance:
        return self._to_instance(self._node(name))

    def list_instances(
        self,
        *,
        tags: Mapping[str, str] | None = None,
        has_tag: str | None = None,
        addresses: bool = True,
    ) -> list[Instance]:
        # EC2 sends addresses with the listing: there is nothing cheaper to ask without them.
        wanted = dict(tags or {})
        nodes = self._live(
            tags={TAG_PREFIX + k: v for k, v in wanted.items()},
            has_tags=(TAG_PREFIX + has_tag,) if has_tag else (),
        )
        found = []
        for node in nodes:
            instance = self._to_instance(node, addresses=addresses)
            if instance.carries(wanted, has_tag):
                found.append(instance)
        return found

    def list_images(self) -> list[Image]:
        with self._calling("listing the account's images"):
            return [to_image(i) for i in self._driver().list_images(ex_owner="self")]

    def get_image(self, name: str) -> Image:
        return to_image(self._image(name))

    def capacity(self) -> Capacity:
        # The only figures EC2 gives are quotas (by instance count or vCPUs, per family),
        # not what is free: the call is kept as the check that the cloud answers us.
        with self._calling("reading the account's attributes"):
            self._ec2("DescribeAccountAttributes", {})
        return Capacity(None, None, None, None, None)

    def close(self) -> None:
        self._local = threading.local()

    # -- extensions -----------------------------------------------------------------------

    def ex_instance_id(self, name: str) -> str:
        """The EC2 instance id of the live instance called ``name``."""
        return str(self._node(name).id)

    def ex_key_pair_name(self, public_key: str) -> str:
        """The name of the key pair this connector imports for ``public_key``."""
        return key_pair_name(public_key)

    def ex_instance_type(self, name: str) -> InstanceType | None:
        """The region's instance type called ``name``; None when it offers none such."""
        with self._calling(f"describing instance type {name}"):
            return INSTANCE_TYPES.named(self._driver(), self._region_key, name)

    # -- helpers --------------------------------------------------------------------------

    def _driver(self) -> Any:  # Libcloud's drivers are typed only in part: Any at this seam
        driver: Any = getattr(self._local, "driver", None)
        if driver is None:
            host, port, secure = self._where
            try:
                driver = Ec2Driver(  # type: ignore[no-untyped-call]
                    self.key_id,
                    self._secret,
                    region=self.region,
                    host=host,
                    port=port,
                    secure=secure,
                    signature_version="4",  # the region is in the signature, as EC2 wants
                    timeout=REQUEST_TIMEOUT,
                )
            except ValueError as exc:  # Libcloud's word for a region it does not know
                raise Invalid(f"EC2 region {self.region!r}: {exc}") from None
            self._local.driver = driver
        return driver

    def _calling(self, what: str) -> Any:
        return translated(self.cloud, what)

    @contextlib.contextmanager
    def _cleaning_up(self, name: str) -> Iterator[None]:
        """Terminate what a launch that failed half-way may have left under ``name``: EC2 can
        have started it before its answer was lost."""
        try:
            yield
        except (BackendError, OSError):
            with contextlib.suppress(StratusError):
                self.destroy(name)
            raise

    def _ec2(self, action: str, params: Mapping[str, str]) -> Any:
        return self._driver().connection.request("/", params={"Action": action, **params}).object

    def _live(
        self,
        *,
        names: tuple[str, ...] | None = None,
        tags: Mapping[str, str] | None = None,
        has_tags: tuple[str, ...] = (),
    ) -> list[Node]:
        filters = instance_filters(names, tags or {}, has_tags, LIVE_STATES)
        with self._calling("listing instances"):
            nodes = self._driver().list_nodes(ex_filters=filters)
        return [
            n
            for n in nodes
            if n.extra.get("status") in LIVE_STATES
            and (names is None or n.extra.get("tags", {}).get(NAME_TAG) in names)
        ]

    def _node(self, name: str) -> Node:
        nodes = self._live(names=(name,))
        if not nodes:
            raise NotFound(f"{self.cloud} has no instance called {name!r}")
        return nodes[0]

    def _wait(self, node_id: str, name: str, states: tuple[str, ...], timeout: float) -> Instance:
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        while True:
            with self._calling(f"reading instance {name}"):
                nodes = self._driver().list_nodes(ex_node_ids=[node_id])
            status = nodes[0].extra.get("status") if nodes else "terminated"
            if status in states:
                return self._to_instance(nodes[0])
            if status in ("shutting-down", "terminated"):
                raise BackendError(f"instance {name} ({node_id}) was terminated on {self.cloud}")
            if time.monotonic() > deadline:
                raise BackendError(
                    f"instance {name} ({node_id}) is still {status} after {timeout:.0f} s"
                )
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def _terminate(self, node_id: str) -> None:
        try:
            with self._calling(f"terminating instance {node_id}"):
                self._ec2("TerminateInstances", {"InstanceId.1": node_id})
        except NotFound:
            return  # gone already

    def _image(self, name: str) -> NodeImage:
        driver = self._driver()
        try:
            with self._calling(f"looking up image {name}"):
                if name.startswith("ami-"):
                    images = driver.list_images(ex_image_ids=[name])
                else:
                    images = driver.list_images(ex_owner="self", ex_filters={"name": name})
        except NotFound:  # an id EC2 does not know, or that is malformed
            images = []
        images = [i for i in images if (i.extra.get("state") or "available") == "available"]
        if not images:
            raise NotFound(
                f"no image called {name!r} on {self.cloud}",
                hint="give an AMI id (ami-...) or the name of one of the account's own AMIs",
            )
        image: NodeImage = images[0]
        return image

    def _choose_size(self, spec: InstanceSpec, image: NodeImage) -> InstanceType:
        if self.size:
            chosen = self.ex_instance_type(self.size)
            if chosen is None:
                raise Invalid(f"{self.cloud} has no instance type {self.size!r}")
            return chosen
        arch = image.extra.get("architecture") or "x86_64"
        cpu, ram = spec.cpu or 1, spec.ram_mb or DEFAULT_RAM_MB
        with self._calling("describing instance types"):
            types = INSTANCE_TYPES.choices(self._driver(), self._region_key, arch)
        chosen = smallest_fitting(types, cpu=cpu, ram_mb=ram, region=self.region)
        if chosen is None:
            raise Invalid(f"{self.cloud} has no {arch} instance type with {cpu} vCPUs, {ram} MiB")
        return chosen

    # -- converters -----------------------------------------------------------------------

    def _to_instance(self, node: Node, *, addresses: bool = True) -> Instance:
        raw_tags: Mapping[str, str] = node.extra.get("tags") or {}
        status = str(node.extra.get("status") or "")
        state = STATE_MAP.get(status, InstanceState.UNKNOWN)
        found: list[str] = []
        if addresses and status == "running":  # a stopped instance keeps a private address,
            found = [*node.public_ips, *node.private_ips]  # but nothing answers there
        kind = node.extra.get("instance_type")
        size = self.ex_instance_type(str(kind)) if kind else None
        tags = {
            k.removeprefix(TAG_PREFIX): v for k, v in raw_tags.items() if k.startswith(TAG_PREFIX)
        }
        return Instance(
            name=raw_tags.get(NAME_TAG) or str(node.id),
            state=state,
            image=tags.get("image") or str(node.extra.get("image_id") or ""),
            addresses=tuple(a for a in found if a and ":" not in a),
            cpu=size.vcpus if size else None,
            ram_mb=size.ram_mb if size else None,
            tags=tags,
            created_at=node.created_at,
            extra={
                "id": node.id,
                "status": status,
                "instance_type": node.extra.get("instance_type"),
                "zone": node.extra.get("availability"),
            },
        )
