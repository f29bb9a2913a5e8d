"""The Marketplace as a service: endorsed entries uploaded, kept forever, listed and searched.

An upload is verified (``signing.verify`` with no trusted CAs: the signature is sound, the
endorsement names the certificate, and the certificate is valid now; whether a site trusts the
endorser is its policy's to decide, at every start) and then refused when it is not newer than
the latest entry of the same image by the same endorser. Nothing is ever deleted: a newer entry
deprecates an image (``slterms:deprecated``) or says what replaces it, and what counts for an
endorser is their latest entry of each image (``current``). Reads are open to anybody, so that
one Marketplace serves other sites too; what one user may make grow is bounded
(``max_entries`` uploads each).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import bindparam, case, func, insert, select, text, tuple_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stratuslab.cloud.marketplace import queries as q
from stratuslab.cloud.marketplace import signing
from stratuslab.cloud.marketplace.entry import TIME_FORMAT
from stratuslab.cloud.marketplace.signing import Verified
from stratuslab.cloud.marketplace.stored import Stored, from_row, to_row
from stratuslab.db.marketplace_models import MarketplaceEntryRecord as E
from stratuslab.db.session import reading, session_scope
from stratuslab.errors import CapacityExceeded, Conflict, Forbidden, NotFound, Unauthorized
from stratuslab.principal import Principal

MAX_ENTRIES = 10_000  # uploads by one user, unless the site says otherwise
MAX_ENDORSEMENTS = 64  # endorsers of one image the policy is told of (the latest first)


@dataclass(frozen=True)
class EndorserSummary:
    """Someone who endorsed entries here, as their latest certificate names them."""

    email: str
    subject: str
    issuer: str
    images: int  # images they endorse (their latest entry of each)
    uploads: int  # every entry of theirs kept
    latest: dt.datetime  # their latest endorsement

    def to_json(self) -> dict[str, object]:
        return {
            "email": self.email,
            "subject": self.subject,
            "issuer": self.issuer,
            "images": self.images,
            "uploads": self.uploads,
            "latest": self.latest.astimezone(dt.UTC).strftime(TIME_FORMAT),
        }


class Marketplace:
    """Endorsed entries: uploaded by users, read by anybody, never deleted."""

    def __init__(self, engine: Engine, *, max_entries: int = MAX_ENTRIES) -> None:
        self.engine = engine
        self.max_entries = max_entries

    # -- upload ---------------------------------------------------------------------------

    def upload(self, *, principal: Principal, xml: bytes, now: dt.datetime | None = None) -> Stored:
        """Verify the signed entry ``xml`` and keep it, exactly as given.

        Raises ``Invalid`` (not an entry; ``TooLarge`` over ``xmlsafe.MAX_XML``), ``Forbidden``
        (the signature, the endorsement or the certificate is refused: the message says which),
        ``Conflict`` (not newer than the latest entry of the image by its endorser; the message
        names both times), ``CapacityExceeded`` (the uploader has ``max_entries`` already).
        """
        if principal.is_node or not (principal.user or principal.server):
            raise Forbidden(f"{principal} may not upload Marketplace entries")
        uploader = principal.user or "server"
        try:
            verified = signing.verify(xml, trusted_cas=None, now=now)
        except Unauthorized as exc:
            raise Forbidden(f"the Marketplace refuses this entry: {exc.message}") from None
        q.email(verified.email)
        row = to_row(verified, xml=xml, uploaded_by=uploader)
        ident, who, when = row["identifier"], row["email"], row["endorsed_at"]
        try:
            with session_scope(self.engine) as session:
                self._lock(session, f"uploader\0{uploader}", f"entry\0{ident}\0{who}")
                self._check_room(session, uploader)
                latest = session.execute(
                    select(E.id, E.endorsed_at).where(
                        E.identifier == ident, E.email == who, E.current.is_(True)
                    )
                ).first()
                if latest is not None and latest.endorsed_at >= when:
                    raise Conflict(
                        f"the entry of {ident} endorsed by {who} at {_time(when)} is not newer"
                        f" than the latest one kept, endorsed at {_time(latest.endorsed_at)}",
                        hint="nothing is replaced in the Marketplace: sign the entry again to"
                        " make a newer one",
                    )
                if latest is not None:
                    session.execute(update(E).where(E.id == latest.id).values(current=False))
                session.execute(insert(E).values(**row))
        except IntegrityError:
            raise Conflict(
                f"an entry of {ident} endorsed by {who} at {_time(when)} is kept already"
            ) from None
        return from_row(row)

    def _check_room(self, session: Session, uploader: str) -> None:
        count = session.scalar(select(func.count()).where(E.uploaded_by == uploader)) or 0
        if count >= self.max_entries:
            raise CapacityExceeded(
                f"{uploader} has uploaded {count} Marketplace entries, the most one user may"
                f" (setting marketplace_max_entries: {self.max_entries})",
                hint="entries are never deleted; ask the site's administrators for more",
            )

    @staticmethod
    def _lock(session: Session, *names: str) -> None:
        """On PostgreSQL, one upload at a time per uploader and per image and endorser, so that
        the checks above hold when uploads race (SQLite's writers take turns already)."""
        if session.get_bind().dialect.name != "postgresql":
            return
        for name in names:
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    # -- reads ----------------------------------------------------------------------------

    def latest(self, identifier: str, email: str | None = None) -> Stored:
        """The latest entry of the image by ``email``, or by whichever endorser endorsed it
        last; ``NotFound`` when there is none. With its XML."""
        query = q.latest_of(q.identifier(identifier), None if email is None else q.email(email))
        with reading(self.engine) as conn:
            found = q.fetch(conn, query)
        if not found:
            by = f" by {email}" if email is not None else ""
            raise NotFound(f"the Marketplace has no entry of {identifier}{by}")
        return found[0]

    def entry(self, identifier: str, email: str, endorsed: dt.datetime | str) -> Stored:
        """One upload, by its address; with its XML."""
        when = q.endorsed(endorsed) if isinstance(endorsed, str) else endorsed
        query = q.entries(with_xml=True).where(
            E.identifier == q.identifier(identifier),
            E.email == q.email(email),
            E.endorsed_at == when,
        )
        with reading(self.engine) as conn:
            found = q.fetch(conn, query)
        if not found:
            raise NotFound(
                f"the Marketplace has no entry of {identifier} by {email} endorsed at"
                f" {_time(when)}",
                hint=f"see /metadata/{identifier}/{email} for the latest",
            )
        return found[0]

    def entries(
        self,
        identifier: str,
        *,
        history: bool = False,
        with_xml: bool = False,
        limit: int = q.MAX_LIMIT,
        offset: int = 0,
    ) -> list[Stored]:
        """Every endorser's latest entry of the image, newest first; with ``history``, every
        entry kept (older ones too). ``NotFound`` when the image has none."""
        query = q.entries(with_xml=with_xml).where(E.identifier == q.identifier(identifier))
        if not history:
            query = query.where(E.current.is_(True))
        limit, offset = q.page(limit, offset)
        with reading(self.engine) as conn:
            found = q.fetch(conn, q.newest_first(query).limit(limit).offset(offset))
        if not found and offset == 0:
            raise NotFound(f"the Marketplace has no entry of {identifier}")
        return found

    def usable_xml(self, identifier: str, *, now: dt.datetime | None = None) -> bytes:
        """The signed XML of the newest endorser's latest entry of the image that is neither
        deprecated nor expired: what an import by identifier is checked against. ``NotFound``
        when there is none (each endorser's latest is listed in the message's hint)."""
        found = self.entries(identifier, with_xml=True)
        usable = [s for s in found if s.entry.deprecated is None and not s.expired(now)]
        if not usable:
            raise NotFound(
                f"the Marketplace has no entry of {identifier} that is neither deprecated nor"
                " expired",
                hint=f"see `stratus marketplace show {identifier}`",
            )
        assert usable[0].xml is not None
        return usable[0].xml

    def search(
        self,
        *,
        text: str | None = None,
        os: str | None = None,
        email: str | None = None,
        tag: str | None = None,
        include_deprecated: bool = False,
        include_expired: bool = False,
        with_xml: bool = False,
        limit: int = 100,
        offset: int = 0,
        now: dt.datetime | None = None,
    ) -> list[Stored]:
        """Each endorser's latest entry of each image that matches, newest first. ``text`` is
        looked for, whatever its case, in titles, descriptions, os, creators and tags (or is an
        identifier); ``os`` and ``tag`` are compared whole, ``email`` exactly. Deprecated and
        expired entries are left out unless asked for."""
        limit, offset = q.page(limit, offset)
        conditions = q.matching(
            self.engine.dialect.name,
            text=text,
            os=os,
            email_is=email,
            tag=tag,
            include_deprecated=include_deprecated,
            include_expired=include_expired,
            now=now or dt.datetime.now(dt.UTC),
        )
        query = q.newest_first(q.entries(with_xml=with_xml).where(*conditions))
        with reading(self.engine) as conn:
            return q.fetch(conn, query.limit(limit).offset(offset))

    def tagged(self, email: str, tag: str) -> Stored:
        """The latest entry ``email`` tagged ``tag`` (StratusLab's ``/tag/<email>/<tag>``):
        among their latest entry of each image, the newest with that tag. With its XML."""
        found = self.search(
            email=email,
            tag=tag,
            include_deprecated=True,
            include_expired=True,
            with_xml=True,
            limit=1,
        )
        if not found:
            raise NotFound(f"{email} has tagged no entry {tag[: q.MAX_QUERY]!r}")
        return found[0]

    def endorsers(self, *, limit: int = 100, offset: int = 0) -> list[EndorserSummary]:
        """Everyone who endorsed entries here, by e-mail."""
        limit, offset = q.page(limit, offset)
        return self._endorsers(None, limit, offset)

    def endorser(self, email: str) -> EndorserSummary:
        found = self._endorsers(q.email(email), 1, 0)
        if not found:
            raise NotFound(f"{email} has endorsed no entry here")
        return found[0]

    def _endorsers(self, email: str | None, limit: int, offset: int) -> list[EndorserSummary]:
        counts = select(
            E.email,
            func.sum(case((E.current.is_(True), 1), else_=0)).label("images"),
            func.count().label("uploads"),
            func.max(E.endorsed_at).label("latest"),
        ).group_by(E.email)
        if email is not None:
            counts = counts.where(E.email == email)
        with reading(self.engine) as conn:
            rows = conn.execute(counts.order_by(E.email).limit(limit).offset(offset)).all()
            if not rows:
                return []
            names = conn.execute(
                select(E.email, E.subject, E.issuer).where(
                    tuple_(E.email, E.endorsed_at).in_([(r.email, r.latest) for r in rows])
                )
            ).all()
        dns = {n.email: (n.subject, n.issuer) for n in names}
        return [
            EndorserSummary(
                email=r.email,
                subject=dns[r.email][0],
                issuer=dns[r.email][1],
                images=int(r.images),
                uploads=int(r.uploads),
                latest=r.latest,
            )
            for r in rows
        ]

    # -- for the site's policy ------------------------------------------------------------

    def endorsements(self, sha256: str) -> list[Verified]:
        """Each endorser's latest entry of the image whose SHA-256 is ``sha256`` (an LXD
        image's fingerprint), the latest first, at most ``MAX_ENDORSEMENTS``: as they were
        verified at upload, with the certificates they were signed with, and no trust claimed.
        From the columns alone (one indexed read, no XML parsed), for the policy's check at
        every start. Deprecated and expired entries are there too: the policy says why it
        refuses them."""
        with reading(self.engine) as conn:
            rows = conn.execute(_ENDORSEMENTS, {"sha256": q.sha256(sha256)}).mappings()
            return [from_row(row).verified() for row in rows]


# Made once: building a select of thirty columns costs more than running it.
_ENDORSEMENTS = q.newest_first(
    q.entries().where(E.sha256 == bindparam("sha256"), E.current.is_(True))
).limit(MAX_ENDORSEMENTS)


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime(TIME_FORMAT)


class ImportBook:
    """The Marketplace as ``principal``'s imports use it (``cloud/importer.py``): the entry
    of an identifier, and the entry an import was checked against kept, so that the site's
    policy finds it at every start; one kept already, or older than what is kept, is fine."""

    def __init__(self, marketplace: Marketplace, principal: Principal) -> None:
        self.marketplace = marketplace
        self.principal = principal

    def usable_xml(self, identifier: str) -> bytes:
        return self.marketplace.usable_xml(identifier)

    def keep(self, xml: bytes) -> None:
        with contextlib.suppress(Conflict):
            self.marketplace.upload(principal=self.principal, xml=xml)
