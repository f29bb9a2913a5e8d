"""Run events as data: a typed kind, structured fields, and a text for people.

Whatever happens to a run is recorded as one event. Programs (the CLI's live board, the
dashboard, tests, SlipStream-style clients) read ``kind`` and ``fields``; ``text`` is the same
facts in a sentence, made here from the fields, for logs and people. Fields that a node
controls (a display text, an abort reason) are plain data: whoever renders them escapes them
for their medium.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    CREATED = "created"  # module, owner
    STATE = "state"  # previous, state
    PROVISIONED = "provisioned"  # address, instance_id
    PROVISIONING_FAILED = "provisioning-failed"  # reason
    COMPLETE = "complete"  # state
    DISPLAY = "display"  # text (the node's own words)
    ABORT = "abort"  # reason
    LOST = "lost"  # reason
    REPORT = "report"  # size
    SCALE = "scale"  # action (vm_add, vm_remove), node, vms
    TERMINATE = "terminate"  # state
    TEARDOWN_FAILED = "teardown-failed"  # attempt, reason, retry_in (None: gave up)
    TORN_DOWN = "torn-down"  # destroyed (count), kept (bool)
    BAKED = "baked"  # image, digest, size_bytes, seconds, packages (name -> version)
    PLACED = "placed"  # cloud, reason, vms (at most MAX_LISTED names), count


@dataclass(frozen=True)
class RunEvent:
    kind: EventKind
    fields: Mapping[str, Any] = field(default_factory=dict)
    node_instance: str | None = None

    @property
    def text(self) -> str:
        """The event in a sentence (without the node instance, which is shown beside it)."""
        f = self.fields
        match self.kind:
            case EventKind.CREATED:
                return f"Initializing {f['module']} for {f['owner']}"
            case EventKind.STATE:
                return f"{f['previous']} -> {f['state']}"
            case EventKind.PROVISIONED:
                return f"running at {f['address']} ({f['instance_id']})"
            case EventKind.PROVISIONING_FAILED:
                return f"{self.node_instance}: {f['reason']}"
            case EventKind.COMPLETE:
                return f"completed {f['state']}"
            case EventKind.DISPLAY:
                return str(f["text"])
            case EventKind.ABORT | EventKind.LOST:
                return str(f["reason"])
            case EventKind.REPORT:
                return f"sent its report ({f['size']} bytes)"
            case EventKind.SCALE:
                verb = "adding" if f["action"] == "vm_add" else "removing"
                return f"{verb} {', '.join(f['vms'])}"
            case EventKind.TERMINATE:
                return f"terminated by its owner in {f['state']}"
            case EventKind.TEARDOWN_FAILED:
                then = (
                    f"trying again in {f['retry_in']:g} s"
                    if f.get("retry_in") is not None
                    else "gave up: `stratus run terminate --force` forgets what is left"
                )
                return f"teardown attempt {f['attempt']} failed: {f['reason']}; {then}"
            case EventKind.TORN_DOWN:
                if f.get("kept"):
                    return "instances kept"
                return f"destroyed {f['destroyed']} instance(s)"
            case EventKind.BAKED:
                return f"baked {f['image']} ({f['size_bytes'] / 2**20:.0f} MiB)"
            case EventKind.PLACED:
                more = f["count"] - len(f["vms"])
                names = ", ".join(f["vms"]) + (f" and {more} more" if more > 0 else "")
                return f"{names} on {f['cloud']} ({f['reason']})"
        return self.kind.value  # pragma: no cover - every kind is matched above


def created(module: str, owner: str) -> RunEvent:
    return RunEvent(EventKind.CREATED, {"module": module, "owner": owner})


MAX_LISTED = 20  # node instances a placement event names; it counts the rest


def placed(cloud: str, reason: str, vms: list[str]) -> RunEvent:
    """Node instances placed on ``cloud`` for one reason (when the run is created or scaled)."""
    fields = {"cloud": cloud, "reason": reason, "vms": vms[:MAX_LISTED], "count": len(vms)}
    return RunEvent(EventKind.PLACED, fields)


def state_changed(previous: str, state: str) -> RunEvent:
    return RunEvent(EventKind.STATE, {"previous": previous, "state": state})


def provisioned(node_instance: str, address: str, instance_id: str) -> RunEvent:
    fields = {"address": address, "instance_id": instance_id}
    return RunEvent(EventKind.PROVISIONED, fields, node_instance)


def provisioning_failed(node_instance: str, reason: str) -> RunEvent:
    return RunEvent(EventKind.PROVISIONING_FAILED, {"reason": reason}, node_instance)


def completed(node_instance: str, state: str) -> RunEvent:
    return RunEvent(EventKind.COMPLETE, {"state": state}, node_instance)


def displayed(node_instance: str, text: str) -> RunEvent:
    return RunEvent(EventKind.DISPLAY, {"text": text}, node_instance)


def aborted(reason: str, node_instance: str | None = None) -> RunEvent:
    return RunEvent(EventKind.ABORT, {"reason": reason}, node_instance)


def lost(node_instance: str, reason: str) -> RunEvent:
    return RunEvent(EventKind.LOST, {"reason": reason}, node_instance)


def reported(node_instance: str, size: int) -> RunEvent:
    return RunEvent(EventKind.REPORT, {"size": size}, node_instance)


def scaled(action: str, node: str, vms: list[str]) -> RunEvent:
    return RunEvent(EventKind.SCALE, {"action": action, "node": node, "vms": vms})


def terminated(state: str) -> RunEvent:
    return RunEvent(EventKind.TERMINATE, {"state": state})


def teardown_failed(attempt: int, reason: str, retry_in: float | None) -> RunEvent:
    fields = {"attempt": attempt, "reason": reason, "retry_in": retry_in}
    return RunEvent(EventKind.TEARDOWN_FAILED, fields)


def torn_down(destroyed: int, *, kept: bool = False) -> RunEvent:
    return RunEvent(EventKind.TORN_DOWN, {"destroyed": destroyed, "kept": kept})


def baked(
    image: str, digest: str, size_bytes: int, seconds: float, packages: dict[str, str]
) -> RunEvent:
    fields = {
        "image": image,
        "digest": digest,
        "size_bytes": size_bytes,
        "seconds": seconds,
        "packages": packages,
    }
    return RunEvent(EventKind.BAKED, fields)


def to_dict(event_id: int, at: str, event: RunEvent) -> dict[str, Any]:
    """An event as the API sends it."""
    return {
        "id": event_id,
        "at": at,
        "kind": event.kind.value,
        "node_instance": event.node_instance,
        "fields": dict(event.fields),
        "message": event.text,
    }
