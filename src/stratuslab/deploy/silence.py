"""Clouds that stopped answering: since when, and when their node instances are lost.

The supervisor lists every cloud its running runs use, one by one. A cloud whose listing fails
is silent from that moment; nothing on it is judged by a listing it did not give. Once it has
been silent for ``after`` seconds (a host down, a network cut, a remote that no longer trusts
us), the node instances whose machines are there are lost, with the reason, and their runs
abort; teardown is tried again until the cloud answers (deploy/control.py). One answer ends the
silence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

LOST_AFTER = 60.0  # seconds a cloud may stay silent before what runs there is lost


@dataclass
class _Silent:
    since: float
    error: str


class Silence:
    def __init__(self, *, after: float = LOST_AFTER) -> None:
        self.after = after
        self._silent: dict[str, _Silent] = {}

    def failed(self, cloud: str, error: str, *, now: float | None = None) -> None:
        """A listing of ``cloud`` failed with ``error``."""
        at = time.monotonic() if now is None else now
        known = self._silent.get(cloud)
        if known is None:
            self._silent[cloud] = _Silent(at, error)
        else:
            known.error = error

    def answered(self, cloud: str) -> None:
        self._silent.pop(cloud, None)

    def only(self, clouds: set[str]) -> None:
        """Forget the silence of clouds not listed in this round: one that nobody's machines
        use any more starts afresh the next time it fails, instead of being taken for silent
        since long ago."""
        for cloud in set(self._silent) - clouds:
            del self._silent[cloud]

    def silent(self, cloud: str) -> bool:
        return cloud in self._silent

    def lost(self, cloud: str, *, now: float | None = None) -> str | None:
        """Why what runs on ``cloud`` is lost, or None while it answers or has been silent for
        less than ``after`` seconds."""
        known = self._silent.get(cloud)
        if known is None:
            return None
        silent_for = (time.monotonic() if now is None else now) - known.since
        if silent_for < self.after:
            return None
        return f"cloud {cloud} has not answered for {silent_for:.0f} s: {known.error}"
