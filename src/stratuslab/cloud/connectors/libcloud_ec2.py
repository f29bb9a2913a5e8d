"""What the Libcloud connector needs of EC2 beyond Libcloud's common compute API: a driver that
reads every EC2-compatible server's answers, the project's errors for EC2's, instance types as
the region describes them, and the filters DescribeInstances applies server-side.

EC2 answers in the XML namespace ``http://ec2.amazonaws.com/doc/2016-11-15/``; servers built on
botocore's service model (moto, LocalStack) leave out the final ``/`` and put error bodies in
the namespace too, and Libcloud then finds nothing in either. :class:`Ec2Response` reads both.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError, LibcloudError, MalformedResponseError
from libcloud.compute.drivers.ec2 import (
    NAMESPACE,
    EC2Connection,
    EC2NodeDriver,
    EC2Response,
)

from stratuslab.errors import (
    BackendError,
    BackendUnavailable,
    CapacityExceeded,
    Conflict,
    Forbidden,
    NotFound,
    StratusError,
)

_LOOSE_NAMESPACE = re.compile(r'xmlns="http://ec2\.amazonaws\.com/doc/([0-9-]+)"')
_ANY_NAMESPACE = re.compile(r'\sxmlns="[^"]*"')
_AUTH_CODES = {
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "OptInRequired",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
}
_CAPACITY_CODES = {
    "InstanceLimitExceeded",
    "InsufficientInstanceCapacity",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
}
# Filter values are sent only when EC2 compares them as they are: '*' and '?' are wildcards
# there (and '\' escapes them), so such a value is compared here only.
_WILDCARD = re.compile(r"[*?\\]")
MAX_PAGES = 100  # of DescribeInstanceTypes (EC2 has about 900 types, 100 a page)


class Ec2Response(EC2Response):
    """EC2's answer, whether the server writes EC2's namespace exactly or botocore's."""

    def parse_body(self) -> Any:
        if isinstance(self.body, str):
            self.body = _LOOSE_NAMESPACE.sub(rf'xmlns="{NAMESPACE}"', self.body)
        return super().parse_body()  # type: ignore[no-untyped-call]

    def parse_error(self) -> str:
        """``Code: message`` of every error in the body; InvalidCredsError for refused
        credentials (which Libcloud turns into nothing when the body has a namespace)."""
        body = self.body if isinstance(self.body, str) else (self.body or b"").decode("utf-8")
        try:  # what Libcloud parses every answer with; expat refuses entity expansion bombs
            root = ET.fromstring(_ANY_NAMESPACE.sub("", body, count=1)) if body else None  # noqa: S314
        except ET.ParseError:
            root = None
        errors = [] if root is None else root.findall(".//Errors/Error") or root.findall("Error")
        found = [(e.findtext("Code") or "", e.findtext("Message") or "") for e in errors]
        if not found and int(self.status) in (401, 403):
            raise InvalidCredsError(f"HTTP {self.status}: {body[:200].strip() or 'no body'}")
        for code, message in found:
            if code in _AUTH_CODES:
                raise InvalidCredsError(f"{code}: {message}")
        if not found:
            return f"HTTP {self.status}: {body[:200].strip() or 'no body'}"
        return "\n".join(f"{code}: {message}" for code, message in found)


class Ec2Connection(EC2Connection):
    responseCls = Ec2Response


class Ec2Driver(EC2NodeDriver):
    connectionCls = Ec2Connection


@dataclass(frozen=True)
class InstanceType:
    """An EC2 instance type as the region describes it."""

    name: str
    vcpus: int
    ram_mb: int
    architectures: frozenset[str]
    current: bool


def describe_instance_types(
    driver: Ec2Driver, *, names: tuple[str, ...] = (), filters: Mapping[str, str] | None = None
) -> dict[str, InstanceType]:
    """The instance types the region offers (DescribeInstanceTypes, every page), by name:
    those called ``names`` if any are given, else those matching ``filters``."""
    found: dict[str, InstanceType] = {}
    token: str | None = None
    for _ in range(MAX_PAGES):
        params: dict[str, str] = {"Action": "DescribeInstanceTypes"}
        for i, name in enumerate(names, 1):
            params[f"InstanceType.{i}"] = name
        for i, (key, value) in enumerate((filters or {}).items(), 1):
            params[f"Filter.{i}.Name"], params[f"Filter.{i}.Value.1"] = key, value
        if not names:
            params["MaxResults"] = "100"
        if token:
            params["NextToken"] = token
        root = driver.connection.request("/", params=params).object  # type: ignore[no-untyped-call]
        for item in root.findall(f"{{{NAMESPACE}}}instanceTypeSet/{{{NAMESPACE}}}item"):
            parsed = _instance_type(item)
            if parsed is not None:
                found[parsed.name] = parsed
        token = root.findtext(f"{{{NAMESPACE}}}nextToken")
        if not token:
            break
    return found


class InstanceTypes:
    """The instance types of each region, kept for the process (they change a few times a
    year; asking takes EC2 several pages): the current generation's by architecture, to
    choose from, and any type by name, to say an instance's size."""

    TTL = 24 * 3600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fitting: dict[tuple[str, str], tuple[float, list[InstanceType]]] = {}
        self._named: dict[tuple[str, str], InstanceType | None] = {}

    def choices(self, driver: Ec2Driver, where: str, arch: str) -> list[InstanceType]:
        key = (where, arch)
        with self._lock:
            kept = self._fitting.get(key)
        if kept and time.monotonic() - kept[0] < self.TTL:
            return kept[1]
        found = describe_instance_types(
            driver,
            filters={"current-generation": "true", "processor-info.supported-architecture": arch},
        )
        chosen = [t for t in found.values() if arch in t.architectures]
        with self._lock:
            self._fitting[key] = (time.monotonic(), chosen)
            self._named.update({(where, t.name): t for t in chosen})
        return chosen

    def named(self, driver: Ec2Driver, where: str, name: str) -> InstanceType | None:
        with self._lock:
            if (where, name) in self._named:
                return self._named[(where, name)]
        try:
            found = describe_instance_types(driver, names=(name,)).get(name)
        except BaseHTTPError:  # InvalidInstanceType: one the region does not offer
            found = None
        with self._lock:
            self._named[(where, name)] = found
        return found


INSTANCE_TYPES = InstanceTypes()


def instance_filters(
    names: tuple[str, ...] | None,
    tags: Mapping[str, str],
    has_tags: tuple[str, ...],
    live_states: tuple[str, ...],
) -> dict[str, Any]:
    """DescribeInstances filters for what EC2 compares exactly; the caller checks again."""
    filters: dict[str, Any] = {"instance-state-name": list(live_states)}
    if names is not None:
        filters["tag:Name"] = [n for n in names if not _WILDCARD.search(n)] or ["-"]
    for key, value in tags.items():
        if not _WILDCARD.search(value) and value:
            filters[f"tag:{key}"] = value
    if has_tags:
        filters["tag-key"] = list(has_tags)
    return filters


@contextlib.contextmanager
def translated(cloud: str, what: str) -> Iterator[None]:
    """Libcloud's and the network's errors while doing ``what`` as the project's own, each
    naming ``cloud`` (the provider and its endpoint)."""
    try:
        yield
    except StratusError:
        raise
    except InvalidCredsError as exc:
        raise Forbidden(
            f"{cloud} refused the credentials recorded for it ({what}): {_said(exc)}",
            hint="check the key id and secret recorded for this cloud",
        ) from None
    except RateLimitReachedError as exc:
        raise BackendError(f"{cloud} throttled the request ({what}): try again later") from exc
    except BaseHTTPError as exc:
        raise _from_code(cloud, what, str(exc.message or exc.code)) from None
    except MalformedResponseError as exc:
        raise BackendError(
            f"{cloud} answered {what} with something that is not EC2's XML: {str(exc.body)[:200]}"
        ) from None
    except (OSError, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise BackendUnavailable(f"{cloud} cannot be reached ({what}): {_cause(exc)}") from None
    except LibcloudError as exc:
        raise BackendError(f"{cloud} failed ({what}): {exc.value}") from None


def _from_code(cloud: str, what: str, said: str) -> StratusError:
    first = said.splitlines()[0] if said else "no reason given"
    code = first.partition(":")[0].strip()
    message = f"{cloud} refused {what}: {first}"
    if code.endswith(".NotFound") or code.endswith(".Malformed"):
        return NotFound(message)
    if code == "UnauthorizedOperation":
        return Forbidden(
            message, hint="the cloud's credentials may not do this: see its IAM policy"
        )
    if code in _CAPACITY_CODES:
        return CapacityExceeded(message)
    if code.endswith(".Duplicate") or code == "IncorrectInstanceState":
        return Conflict(message)
    return BackendError(message)


def _instance_type(item: ET.Element) -> InstanceType | None:
    def text(path: str) -> str:
        return item.findtext("/".join(f"{{{NAMESPACE}}}{p}" for p in path.split("/"))) or ""

    vcpus, ram = text("vCpuInfo/defaultVCpus"), text("memoryInfo/sizeInMiB")
    if not (vcpus.isdigit() and ram.isdigit()):
        return None
    archs = item.findall(
        f"{{{NAMESPACE}}}processorInfo/{{{NAMESPACE}}}supportedArchitectures/{{{NAMESPACE}}}item"
    )
    return InstanceType(
        name=text("instanceType"),
        vcpus=int(vcpus),
        ram_mb=int(ram),
        architectures=frozenset((a.text or "").strip() for a in archs),
        current=text("currentGeneration") == "true",
    )


def _said(exc: Exception) -> str:
    return str(getattr(exc, "value", None) or exc)[:300]


def _cause(exc: BaseException) -> str:
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return str(exc)[:300] or type(exc).__name__
