"""What an EC2 launch is made of, apart from the calls: the instance type chosen, the key
pair's name, the user-data sent, the endpoint's parts, and an AMI as the contract's image."""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from urllib.parse import urlsplit

from libcloud.compute.base import NodeImage
from libcloud.pricing import get_size_price

from stratuslab.cloud.base import Image
from stratuslab.cloud.connectors.libcloud_ec2 import InstanceType
from stratuslab.errors import Invalid


def smallest_fitting(
    types: Iterable[InstanceType], *, cpu: int, ram_mb: int, region: str
) -> InstanceType | None:
    """The smallest type with ``cpu`` vCPUs and ``ram_mb`` MiB, then the cheapest of those,
    then by name so that the choice is the same every time; None when none fits. Bare-metal
    types are never chosen for an instance that did not ask for one by name."""
    fitting = [t for t in types if t.vcpus >= cpu and t.ram_mb >= ram_mb and "metal" not in t.name]
    if not fitting:
        return None
    return min(fitting, key=lambda t: (t.ram_mb, t.vcpus, price(t.name, region), t.name))


def price(kind: str, region: str) -> float:
    """What an hour of ``kind`` costs in ``region`` by Libcloud's price list; infinite when the
    list does not say (EC2's API gives no prices)."""
    try:
        found = get_size_price(
            driver_type="compute", driver_name="ec2_linux", size_id=kind, region=region
        )
    except KeyError:
        return math.inf
    return float(found) if found else math.inf  # 0 is how the list says it has none


def key_pair_name(public_key: str) -> str:
    """The key pair's name for an OpenSSH public key: from the SHA-256 of its key blob, so that
    every instance with that key (from any server process) shares one key pair."""
    fields = public_key.split()
    blob = fields[1] if len(fields) > 1 else public_key
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError as exc:
        raise Invalid(f"ssh key {public_key[:40]!r}...: not an OpenSSH public key") from exc
    return "stratus-" + hashlib.sha256(raw).hexdigest()[:32]


def user_data(user_data: str | None, extra_keys: tuple[str, ...]) -> str | None:
    """The user's user-data, as it is; with keys that found no key pair, a MIME multipart
    message (which cloud-init reads part by part) with a ``#cloud-config`` part for them."""
    if not extra_keys:
        return user_data
    keys = "\n".join(f"  - {k}" for k in extra_keys)
    message = MIMEMultipart()
    message.attach(MIMEText(f"#cloud-config\nssh_authorized_keys:\n{keys}\n", "cloud-config"))
    if user_data:
        subtype = "cloud-config" if user_data.startswith("#cloud-config") else "x-shellscript"
        message.attach(MIMEText(user_data, subtype))
    return message.as_string()


def endpoint_parts(endpoint: str | None) -> tuple[str | None, int | None, bool]:
    """Host, port and whether TLS, for Libcloud, from an ``http(s)://HOST[:PORT]`` URL."""
    if endpoint is None:
        return None, None, True
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"endpoint {endpoint!r}: give http(s)://HOST[:PORT]")
    if parts.path not in ("", "/"):
        raise Invalid(f"endpoint {endpoint!r}: EC2 answers at the root, give no path")
    try:
        port = parts.port
    except ValueError as exc:
        raise Invalid(f"endpoint {endpoint!r}: {exc}") from None
    return parts.hostname, port, parts.scheme == "https"


def to_image(image: NodeImage) -> Image:
    mappings = image.extra.get("block_device_mapping") or []
    gib = sum(int((m.get("ebs") or {}).get("volume_size") or 0) for m in mappings)
    return Image(
        name=image.name or image.id,
        fingerprint=image.id,
        size_bytes=gib * 2**30,
        description=image.extra.get("description") or "",
        properties={
            k: str(v)
            for k, v in {
                "architecture": image.extra.get("architecture"),
                "owner": image.extra.get("owner_id"),
                "state": image.extra.get("state"),
            }.items()
            if v
        },
    )
