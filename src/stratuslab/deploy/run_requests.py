"""What a user asks when starting a run (:class:`RunRequest`), and the bounds it is held to,
checked before anything is looked up or built (:func:`check_request`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stratuslab.deploy.keys import check_value, parse_key
from stratuslab.deploy.states import KeepRunning
from stratuslab.errors import Invalid, TooLarge

MAX_TIMEOUT_S = 7 * 24 * 3600  # a run that is not Ready within a week never will be
MAX_TAGS = 1024  # characters of tags, as the store keeps them
MAX_GIVEN = 1000  # deploy-time values in one request


@dataclass(frozen=True)
class RunRequest:
    module: str  # "path" (the newest version) or "path/N"
    given: Mapping[str, str] = field(default_factory=dict)  # "web:port" -> "81", "ss:x" -> "y"
    multiplicity: Mapping[str, int] = field(default_factory=dict)
    keep_running: KeepRunning = KeepRunning.ON_SUCCESS
    tags: Sequence[str] = ()
    timeout_s: float | None = None
    mutable: bool = False
    clouds: Mapping[str, str] = field(default_factory=dict)  # node -> cloud, over the module's
    max_provisioning_failures: Mapping[str, int] = field(default_factory=dict)  # node -> count
    pristine: bool = False  # start every node from its pristine image, baked ones or not


def check_request(request: RunRequest, *, max_instances: int) -> None:
    """What a request may ask, checked before anything is looked up or built."""
    timeout = request.timeout_s
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT_S:
        raise Invalid(
            f"the run timeout must be between 1 s and {MAX_TIMEOUT_S} s (a week), not {timeout:g} s"
        )
    if len(request.given) > MAX_GIVEN:
        raise TooLarge(f"at most {MAX_GIVEN} deploy-time values, not {len(request.given)}")
    for key, value in request.given.items():
        parse_key(key)
        check_value(key, value)
    for node, count in request.multiplicity.items():
        if not 0 <= count <= max_instances:
            raise Invalid(f"{node}:multiplicity: between 0 and {max_instances}, not {count}")
    if len(",".join(request.tags)) > MAX_TAGS or any("," in tag for tag in request.tags):
        raise Invalid(f"tags: at most {MAX_TAGS} characters in all, none holding a comma")
