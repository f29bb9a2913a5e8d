"""What a watch shows to anybody holding its id (128 random bits its owner gives out): the
badge of a branch, and the feed of its verdicts. Neither shows more than verdicts, commits'
subjects and authors, and links."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.session import session_scope
from stratuslab.db.verify_models import VerificationRecord, WatchBranchRecord, WatchRecord
from stratuslab.errors import NotFound
from stratuslab.verify.feed import Entry, tag_uri

MAX_FEED = 50  # entries of a feed


class PublicViews:
    """What a watch shows to anybody holding its id: a badge, a feed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def badge(self, watch_id: str, branch: str) -> tuple[str, str | None, bool]:
        """(label, the branch's verdict, whether a verification is under way)."""
        with session_scope(self.engine) as session:
            row = session.get(WatchRecord, watch_id)
            if row is None or row.removed or branch not in row.branches:
                raise NotFound("no such watch or branch")
            state = session.get(WatchBranchRecord, (watch_id, branch))
            running = session.scalars(
                select(VerificationRecord.id).where(
                    VerificationRecord.watch_id == watch_id,
                    VerificationRecord.branch == branch,
                    VerificationRecord.phase == "running",
                )
            ).first()
            return (f"{row.name} {branch}", state.verdict if state else None, running is not None)

    def feed(self, watch_id: str, links_url: str) -> tuple[str, list[Entry]]:
        """(the feed's title, its entries): the watch's newest verdicts, each entry's id a tag
        URI that a change of the server's port or scheme leaves as it is."""
        with session_scope(self.engine) as session:
            row = session.get(WatchRecord, watch_id)
            if row is None or row.removed:
                raise NotFound("no such watch")
            done = session.scalars(
                select(VerificationRecord)
                .where(VerificationRecord.watch_id == watch_id, VerificationRecord.phase == "done")
                .order_by(VerificationRecord.id.desc())
                .limit(MAX_FEED)
            )
            entries = [
                Entry(
                    id=tag_uri(links_url, f"watch/{watch_id}/verification/{v.id}"),
                    title=f"{(v.verdict or '').upper()} {v.branch} {v.commit[:7]} "
                    f"({v.author}: {v.subject[:80]})",
                    link=f"{links_url}/api/runs/{v.run_id}" if v.run_id else links_url,
                    updated=v.ended_at or v.queued_at,
                    summary=v.reason or f"{v.verdict} ({v.why})",
                    author=v.author or row.owner,
                )
                for v in done
            ]
            return f"{row.owner}/{row.name}: verdicts", entries
