"""The site's gate: the trust policy applied to an image about to start.

:class:`ImagePolicy` holds the site's :class:`~stratuslab.cloud.marketplace.policy.Policy`,
its trust store (read again when its files change) and where endorsements come from (an
:class:`EndorsementSource`: the Marketplace store; by default none, so that a site without a
Marketplace starts what it starts today). The instance service asks it once for each distinct
image of a batch it admits (``cloud/admission.py``), the run service for every node's image
before a run is recorded (``deploy/imagecheck.py``), ``stratus image verify`` to show a
decision without starting anything. A trust store that cannot be read refuses what needs it,
saying why: it never lets an endorsement through unchecked.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from stratuslab.cloud.base import Image
from stratuslab.cloud.catalog import Owned
from stratuslab.cloud.marketplace.policy import Decision, ImageFacts, Policy, refusal_message
from stratuslab.cloud.marketplace.queries import is_sha256
from stratuslab.cloud.marketplace.signing import Verified
from stratuslab.cloud.marketplace.trust import Problem, TrustStore
from stratuslab.errors import Invalid, StratusError, Untrusted

if TYPE_CHECKING:
    from stratuslab.config import Settings

log = logging.getLogger(__name__)
SLOW_S = 0.005  # a decision's goal; slower ones are logged


class EndorsementSource(Protocol):
    """Where the endorsements of an image come from (the Marketplace store)."""

    def endorsements(self, sha256: str) -> list[Verified]:
        """Each endorser's latest entry about the image whose SHA-256 is ``sha256``."""
        ...


class NoEndorsements:
    """A site without a Marketplace: nothing is endorsed."""

    def endorsements(self, sha256: str) -> list[Verified]:
        return []


NO_ENDORSEMENTS = NoEndorsements()


class _Live:
    """The trust store as its files are now, as the policy asks it; one that cannot be read
    refuses every chain, saying why."""

    def __init__(self, store: TrustStore) -> None:
        self.store = store

    def problem(self, certificates: Sequence[bytes], at: dt.datetime) -> Problem | None:
        try:
            anchors = self.store.current()
        except Invalid as exc:  # TooLarge too
            return Problem("untrusted", f"the site's trust store cannot be used: {exc.message}")
        return anchors.problem(certificates, at)


def facts(cloud: str, image: Image, made_by_users: Sequence[Owned] = ()) -> ImageFacts:
    """What the policy knows of an image a cloud has, and the catalog's records of it.

    An image a user made is never the site's own, whatever it carries: LXD copies the
    properties of the image an instance came from into the image published from it, so a
    user's saved base image would otherwise hold ``stratus.recipe``. An imported image whose
    archive the server rewrote (to take out such claims) is judged by the bytes its entry
    describes, which the import checked before anything was imported.
    """
    properties = dict(image.properties)
    fingerprint, size = image.fingerprint, image.size_bytes
    if made_by_users:
        properties = {k: v for k, v in properties.items() if not k.startswith("stratus.")}
    for record in made_by_users:
        sums = record.details.get("checksums") if record.origin == "import" else None
        if isinstance(sums, dict) and isinstance(sums.get("sha256"), str):
            fingerprint = sums["sha256"]
            size = int(record.details.get("bytes") or size)
            break
    return ImageFacts(
        cloud=cloud,
        name=image.name,
        fingerprint=fingerprint,
        size_bytes=size,
        properties=properties,
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ImagePolicy:
    """The site's policy, its trust store and its endorsements, deciding images."""

    def __init__(
        self,
        policy: Policy,
        *,
        source: EndorsementSource = NO_ENDORSEMENTS,
        trust: TrustStore | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.policy = policy if trust is None else replace(policy, trust=_Live(trust))
        self.source = source
        self.trust = trust
        self.clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, *, source: EndorsementSource = NO_ENDORSEMENTS
    ) -> ImagePolicy:
        trust = (
            TrustStore(Path(settings.policy_trust_store), [Path(p) for p in settings.policy_crls])
            if settings.policy_trust_store
            else None
        )
        return cls(Policy.from_settings(settings), source=source, trust=trust)

    def decide(self, image: ImageFacts, endorsements: Sequence[Verified] | None = None) -> Decision:
        """The decision for ``image`` now, with ``endorsements`` or, by default, those the
        source has for its SHA-256."""
        started = time.perf_counter()
        fingerprint = image.fingerprint.lower()
        if endorsements is not None:
            found: Sequence[Verified] = endorsements
        elif is_sha256(fingerprint):
            found = self.source.endorsements(fingerprint)
        else:  # a cloud that names images otherwise (an AMI id): no entry can endorse it
            found = []
        decision = self.policy.decide(image, found, now=self.clock())
        took = time.perf_counter() - started
        if took > SLOW_S:
            log.info("deciding image %s on %s took %.1f ms", image.name, image.cloud, took * 1e3)
        return decision

    def decide_image(
        self, cloud: str, image: Image, made_by_users: Sequence[Owned] = ()
    ) -> Decision:
        """The decision on ``image`` of ``cloud``, knowing the catalog's records of it."""
        return self.decide(facts(cloud, image, made_by_users))

    def refusal(
        self, cloud: str, image: Image, made_by_users: Sequence[Owned] = ()
    ) -> StratusError | None:
        """Why ``image`` may not start on ``cloud`` (``Untrusted``, naming the rule), or None.
        A source that fails refuses with its own error."""
        try:
            decision = self.decide_image(cloud, image, made_by_users)
        except StratusError as exc:
            return exc
        if decision.allowed:
            return None
        return Untrusted(refusal_message(image.name, cloud, decision))
