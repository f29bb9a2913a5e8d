"""The site's trust policy: whether an image may start, and the rule that says so. Pure.

:meth:`Policy.decide` takes what is known of an image (:class:`ImageFacts`: its cloud, name,
SHA-256, size and properties, and its four checksums when its bytes are at hand) and the
Marketplace endorsements of those bytes (each endorser's latest entry), and answers a
:class:`Decision`, which names the rule that made it. In this order:

1. ``checksums.deny``, ``identifiers.deny``: a checksum (of any of the four algorithms, the
   image's own or one an entry about it states) or an identifier the site denies refuses the
   image, whatever endorses it.
2. ``endorsed``: the image starts when at least one endorsement is acceptable, that is, its
   entry describes these bytes (else ``size``: the size or a checksum differs), its endorser
   is not denied (``endorsers.deny``) and, when the site lists the endorsers it allows, is
   one of them (``endorsers.allow``), its certificate chain reaches the site's trust store
   with every certificate valid now (``untrusted``) and none revoked (``revoked``), when the
   site has a trust store, its entry is not deprecated (``deprecated``, with the reason) and
   not past its ``valid`` date (``expired``, unless the site allows expired entries).
3. ``checksums.allow``, ``identifiers.allow``: an image the site allows by checksum or
   identifier starts without an acceptable entry.
4. Endorsements, none acceptable: refused, by the rule that refused the newest, every
   endorsement's reason listed.
5. No endorsement at all: a base image this site built itself (``stratus image build``: the
   property ``stratus.recipe``) per ``policy_site_images`` (rule ``site-image``), any other per
   ``policy_unsigned`` (rule ``unsigned``).

Endorsers are listed by e-mail (compared without regard to case) or certificate DN (grid
slash form or RFC 4514, compared as the accounts' certificate logins compare them:
:mod:`stratuslab.dn`). The trust store is whatever :class:`TrustCheck` the caller gives
(:mod:`~stratuslab.cloud.marketplace.trust`); nothing here reads a file or a clock.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509

from stratuslab.cloud.marketplace.identifier import Checksums, sha1_of
from stratuslab.dn import dn_of, normalized
from stratuslab.errors import Invalid

if TYPE_CHECKING:
    from stratuslab.cloud.marketplace.signing import Verified
    from stratuslab.cloud.marketplace.trust import Problem
    from stratuslab.config import Settings

ALLOW, REFUSE = "allow", "refuse"
SITE_PROPERTIES = ("stratus.recipe",)  # what marks an image this site made itself
_EMAIL = re.compile(r"^[^@\s/=,]+@[^@\s/=,]+$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}|[0-9a-fA-F]{128})$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class ImageFacts:
    """What the policy knows of an image: ``fingerprint`` is its SHA-256 (LXD's fingerprint
    is the SHA-256 of the image's tarball); ``checksums`` are all four, when its bytes were
    read (a file at hand), else None."""

    cloud: str
    name: str
    fingerprint: str
    size_bytes: int
    properties: Mapping[str, str] = field(default_factory=dict)
    checksums: Checksums | None = None


@dataclass(frozen=True)
class Decision:
    """Whether the image may start, the rule that decided, and why, in words: for a refusal,
    every endorsement and why it was not accepted."""

    allowed: bool
    rule: str
    reasons: tuple[str, ...]
    endorser: str | None = None  # the e-mail of the endorsement accepted
    identifier: str | None = None  # the Marketplace identifier; None: no entry names it

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "rule": self.rule,
            "reasons": list(self.reasons),
            "endorser": self.endorser,
            "identifier": self.identifier,
        }


def refusal_message(name: str, cloud: str, decision: Decision) -> str:
    """The one line that says an image was refused, and by which rule."""
    return (
        f"image {name} on {cloud} refused by the site's policy (rule {decision.rule}): "
        + "; ".join(decision.reasons)
    )


class TrustCheck(Protocol):
    """The site's trust store, as the policy asks it."""

    def problem(self, certificates: Sequence[bytes], at: dt.datetime) -> Problem | None: ...


def endorser_key(text: str) -> str:
    """An endorser as a site lists them, in the form compared: ``email:`` and the address in
    lowercase, or ``dn:`` and the DN in slash form. Invalid when it is neither."""
    text = text.strip()
    # A key already made is taken as it is (a policy copied with another trust store).
    if text.startswith("dn:/"):
        text = text.removeprefix("dn:")
    elif text.startswith("email:"):
        text = text.removeprefix("email:")
    if "=" in text:
        return "dn:" + normalized(text)
    if _EMAIL.match(text):
        return "email:" + text.lower()
    raise Invalid(f"{text[:80]!r} is neither an e-mail address nor a certificate DN")


def checksum_key(text: str) -> str:
    """A checksum as a site lists it, in lowercase; Invalid unless it is the hex digest of
    MD5, SHA-1, SHA-256 or SHA-512."""
    if not _HEX.match(text.strip()):
        raise Invalid(f"{text[:140]!r} is not a hexadecimal MD5, SHA-1, SHA-256 or SHA-512 digest")
    return text.strip().lower()


def identifier_key(text: str) -> str:
    sha1_of(text.strip())  # Invalid unless it is one
    return text.strip()


def _short(digest: str) -> str:
    return digest[:16] + "..."


def _when(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M}Z"


@dataclass(frozen=True)
class Policy:
    """A site's policy (the ``policy_*`` settings); lists may be given in any form
    :func:`endorser_key`, :func:`checksum_key` and :func:`identifier_key` take."""

    unsigned: str = ALLOW
    expired: str = REFUSE
    site_images: str = ALLOW
    endorsers_allow: Collection[str] = frozenset()
    endorsers_deny: Collection[str] = frozenset()
    identifiers_allow: Collection[str] = frozenset()
    identifiers_deny: Collection[str] = frozenset()
    checksums_allow: Collection[str] = frozenset()
    checksums_deny: Collection[str] = frozenset()
    trust: TrustCheck | None = None

    def __post_init__(self) -> None:
        for name in ("unsigned", "expired", "site_images"):
            if getattr(self, name) not in (ALLOW, REFUSE):
                raise Invalid(f"policy {name}: {ALLOW} or {REFUSE}, not {getattr(self, name)!r}")
        for name, key in (
            ("endorsers", endorser_key),
            ("identifiers", identifier_key),
            ("checksums", checksum_key),
        ):
            for which in ("allow", "deny"):
                attribute = f"{name}_{which}"
                object.__setattr__(
                    self, attribute, frozenset(key(item) for item in getattr(self, attribute))
                )

    @classmethod
    def from_settings(cls, settings: Settings, *, trust: TrustCheck | None = None) -> Policy:
        return cls(
            unsigned=settings.policy_unsigned,
            expired=settings.policy_expired,
            site_images=settings.policy_site_images,
            endorsers_allow=settings.policy_endorsers_allow,
            endorsers_deny=settings.policy_endorsers_deny,
            identifiers_allow=settings.policy_identifiers_allow,
            identifiers_deny=settings.policy_identifiers_deny,
            checksums_allow=settings.policy_checksums_allow,
            checksums_deny=settings.policy_checksums_deny,
            trust=trust,
        )

    def decide(
        self, image: ImageFacts, endorsements: Sequence[Verified], *, now: dt.datetime
    ) -> Decision:
        """Whether ``image`` may start, given the ``endorsements`` of its bytes (see the
        module's docstring for the rules, in order)."""
        sha256 = image.fingerprint.lower()
        digests = {sha256}
        identifiers: list[str] = []
        if image.checksums is not None:
            digests.update(image.checksums.by_algorithm().values())
            identifiers.append(image.checksums.identifier)
        for endorsement in endorsements:
            if endorsement.entry.checksums.sha256 == sha256:  # an entry about these bytes
                digests.update(endorsement.entry.checksums.by_algorithm().values())
                identifiers.append(endorsement.entry.identifier)
        identifiers = list(dict.fromkeys(identifiers))
        identifier = identifiers[0] if identifiers else None
        denied = sorted(digests & frozenset(self.checksums_deny))
        if denied:
            return Decision(
                False,
                "checksums.deny",
                tuple(
                    f"the site denies the checksum {_short(d)} (policy_checksums_deny),"
                    " whatever endorses it"
                    for d in denied
                ),
                identifier=identifier,
            )
        denied = [i for i in identifiers if i in self.identifiers_deny]
        if denied:
            return Decision(
                False,
                "identifiers.deny",
                tuple(
                    f"the site denies the identifier {i} (policy_identifiers_deny),"
                    " whatever endorses it"
                    for i in denied
                ),
                identifier=identifier,
            )
        newest_first = sorted(endorsements, key=_endorsed_at, reverse=True)
        accepted: Verified | None = None
        refused: list[tuple[str, str]] = []
        for endorsement in newest_first:
            problem = self._problem(image, endorsement, now)
            if problem is not None:
                refused.append(problem)
            elif accepted is None:
                accepted = endorsement
        others = tuple(reason for _, reason in refused)
        if accepted is not None:
            return Decision(
                True,
                "endorsed",
                (_endorsed(accepted), *others),
                endorser=accepted.email,
                identifier=accepted.entry.identifier,
            )
        allowed = sorted(digests & frozenset(self.checksums_allow))
        if allowed:
            return Decision(
                True,
                "checksums.allow",
                (
                    f"the site allows the checksum {_short(allowed[0])} (policy_checksums_allow)",
                    *others,
                ),
                identifier=identifier,
            )
        allowed = [i for i in identifiers if i in self.identifiers_allow]
        if allowed:
            return Decision(
                True,
                "identifiers.allow",
                (
                    f"the site allows the identifier {allowed[0]} (policy_identifiers_allow)",
                    *others,
                ),
                identifier=identifier,
            )
        if refused:
            return Decision(False, refused[0][0], others, identifier=identifier)
        return self._without_entry(image, identifier)

    def _without_entry(self, image: ImageFacts, identifier: str | None) -> Decision:
        unsigned = f"no Marketplace entry endorses it (sha256 {image.fingerprint[:8]}...)"
        made_here = next((p for p in SITE_PROPERTIES if p in image.properties), None)
        if made_here is not None:
            value = image.properties[made_here]
            shown = value if len(value) <= 16 else _short(value)
            said = f"an image this site made itself ({made_here} {shown})"
            if self.site_images == ALLOW:
                return Decision(True, "site-image", (said,), identifier=identifier)
            return Decision(
                False,
                "site-image",
                (
                    f"{unsigned}; {said}, and the site does not count its own images as"
                    " endorsed (policy_site_images = refuse)",
                ),
                identifier=identifier,
            )
        if self.unsigned == ALLOW:
            return Decision(
                True,
                "unsigned",
                (f"{unsigned}; the site allows unsigned images (policy_unsigned = allow)",),
                identifier=identifier,
            )
        return Decision(False, "unsigned", (unsigned,), identifier=identifier)

    def _problem(
        self, image: ImageFacts, endorsement: Verified, now: dt.datetime
    ) -> tuple[str, str] | None:
        """Why ``endorsement`` is not acceptable for ``image``: (rule, reason), or None."""
        entry = endorsement.entry
        who = f"entry {entry.identifier} endorsed by {endorsement.email}"
        stated = entry.checksums
        if image.checksums is not None:
            wrong = stated.mismatches(image.checksums)
        else:
            wrong = []
            if image.size_bytes != stated.size:
                wrong.append(f"the size is {image.size_bytes} bytes, the entry says {stated.size}")
            if image.fingerprint.lower() != stated.sha256:
                wrong.append(
                    f"the SHA-256 is {_short(image.fingerprint)}, the entry says"
                    f" {_short(stated.sha256)}"
                )
        if wrong:
            return "size", f"{who}: the bytes do not match the entry: {'; '.join(wrong)}"
        if self.endorsers_allow or self.endorsers_deny:
            keys = _keys(endorsement)
            if keys & frozenset(self.endorsers_deny):
                return "endorsers.deny", f"{who}: the site denies this endorser"
            if self.endorsers_allow and not keys & frozenset(self.endorsers_allow):
                return "endorsers.allow", f"{who}: not one of the endorsers the site allows"
        if self.trust is not None:
            problem = self.trust.problem(endorsement.certificates, now)
            if problem is not None:
                return problem.rule, f"{who}: {problem.reason}"
        if entry.deprecated is not None:
            return "deprecated", f"{who}: the entry is deprecated: {entry.deprecated}"
        if entry.valid <= now and self.expired == REFUSE:
            return "expired", f"{who}: the entry expired on {_when(entry.valid)}"
        return None


def _endorsed_at(endorsement: Verified) -> dt.datetime:
    endorser = endorsement.entry.endorser
    return endorser.created if endorser is not None else _EPOCH


def _endorsed(endorsement: Verified) -> str:
    entry = endorsement.entry
    said = f"entry {entry.identifier} endorsed by {endorsement.email} ({endorsement.subject})"
    return f"{said}, valid until {_when(entry.valid)}"


def _keys(endorsement: Verified) -> frozenset[str]:
    """The forms an endorser is listed in: their e-mail and their certificate's subject DN."""
    keys = {"email:" + endorsement.email.lower()}
    try:
        if endorsement.certificates:
            leaf = x509.load_der_x509_certificate(endorsement.certificates[0])
            keys.add("dn:" + dn_of(leaf.subject))
        else:
            keys.add("dn:" + normalized(endorsement.subject))
    except (ValueError, Invalid):
        pass  # a DN nobody can list matches no list
    return frozenset(keys)
