"""What the cloud registry checks and shows: a cloud's name, its bounds, its options, and the
view of it one caller may see (:mod:`stratuslab.cloud.registry` decides who sees what)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from stratuslab.cloud.clouds import REDACTED, Cloud
from stratuslab.errors import Invalid

# A DNS label (lower case, digits, inner hyphens), one longer than DNS allows: the store keeps 64.
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
MAX_NAME = 64
MAX_PRIORITY = 10_000
MAX_SITE_INSTANCES = 100_000
MAX_NOTE = 1000
MAX_CONNECTOR = 32  # characters of a connector kind (the store's column)
MAX_OPTIONS = 32  # options of one cloud
MAX_OPTION_KEY = 64
MAX_OPTION_BYTES = 16 * 1024  # one option's value as JSON: a PEM certificate is ~2 KiB
MAX_OPTIONS_BYTES = 64 * 1024  # all of them


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise Invalid(
            f"a cloud's name is a DNS label of at most {MAX_NAME} characters (a-z, 0-9 and "
            f"inner hyphens), and {name[:80]!r} is not one",
            hint="for example: local, lab-2, aws-eu-west-1",
        )
    return name


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise Invalid(f"a cloud's priority is within 0..{MAX_PRIORITY}, not {priority}")
    return priority


def check_max_instances(cap: int | None) -> int | None:
    if cap is not None and (isinstance(cap, bool) or not 0 <= cap <= MAX_SITE_INSTANCES):
        raise Invalid(f"a cloud's max_instances is within 0..{MAX_SITE_INSTANCES}, not {cap}")
    return cap


def check_note(note: str | None) -> str | None:
    if note is not None and len(note) > MAX_NOTE:
        raise Invalid(f"a cloud's note has at most {MAX_NOTE} characters, not {len(note)}")
    if note is not None and "\x00" in note:
        raise Invalid("a cloud's note holds no NUL character")
    return note or None


def check_connector(kind: str) -> str:
    if not 0 < len(kind) <= MAX_CONNECTOR:
        raise Invalid(f"a connector kind has 1 to {MAX_CONNECTOR} characters")
    return kind


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options the store can keep: bounded, JSON, no NUL (PostgreSQL refuses it in text).
    Messages name keys, never values (a value may be a credential)."""
    if len(options) > MAX_OPTIONS:
        raise Invalid(f"a cloud has at most {MAX_OPTIONS} options, not {len(options)}")
    total = 0
    for key, value in options.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_OPTION_KEY:
            raise Invalid(f"an option's name has 1 to {MAX_OPTION_KEY} characters")
        try:
            text = json.dumps(value, allow_nan=False)  # PostgreSQL's JSON has no NaN
        except (TypeError, ValueError):
            raise Invalid(f"option {key!r}: not a JSON value") from None
        if "\x00" in key or "\\u0000" in text:
            raise Invalid(f"option {key!r}: holds a NUL character")
        if len(text) > MAX_OPTION_BYTES:
            raise Invalid(f"option {key!r}: its value is over {MAX_OPTION_BYTES} bytes")
        total += len(text)
    if total > MAX_OPTIONS_BYTES:
        raise Invalid(f"a cloud's options hold at most {MAX_OPTIONS_BYTES} bytes")
    return options


def merged_options(old: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``old`` with ``changes`` over it: a value of None removes the option, and the redacted
    placeholder keeps what is recorded (an administrator may send back what they were shown)."""
    merged = dict(old)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif value != REDACTED:
            merged[key] = value
    return merged


def where(cloud: str, options: dict[str, Any]) -> str:
    """How people name a backend in a message: the cloud and its URL (or region)."""
    place = options.get("endpoint") or options.get("region")
    return f"cloud {cloud!r}" + (f" at {place}" if isinstance(place, str) and place else "")


@dataclass(frozen=True)
class CloudView:
    """A cloud as one caller sees it; ``options`` only for administrators, credentials
    redacted; ``capacity`` only in a show (None with ``capacity_error`` when the backend did
    not answer)."""

    name: str
    connector: str
    priority: int
    enabled: bool
    max_instances: int | None
    note: str | None
    instances: int  # live instances the store records there
    volumes: int  # volumes not gone the store records there
    options: dict[str, Any] | None = None
    capacity: dict[str, Any] | None = None
    capacity_error: str | None = None

    @classmethod
    def of(
        cls, cloud: Cloud, *, instances: int, volumes: int, admin: bool, **extra: Any
    ) -> CloudView:
        return cls(
            name=cloud.name,
            connector=cloud.connector,
            priority=cloud.priority,
            enabled=cloud.enabled,
            max_instances=cloud.max_instances,
            note=cloud.note,
            instances=instances,
            volumes=volumes,
            options=cloud.shown_options() if admin else None,
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "connector": self.connector,
            "priority": self.priority,
            "enabled": self.enabled,
            "max_instances": self.max_instances,
            "note": self.note,
            "instances": self.instances,
            "volumes": self.volumes,
            "options": self.options,
            "capacity": self.capacity,
            "capacity_error": self.capacity_error,
        }
