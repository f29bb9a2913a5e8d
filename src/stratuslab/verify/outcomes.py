"""The outcome of one verification, as notifications tell it (``values.Outcome``): the
commit, its verdict beside the branch's previous one, the run's links, and what a bisect found.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from stratuslab.db.models import utcnow
from stratuslab.db.verify_models import VerificationRecord, WatchBranchRecord, WatchRecord
from stratuslab.verify import runner, schedule
from stratuslab.verify.values import Commit, Outcome, Phase, Verdict


def build(
    watch: WatchRecord,
    row: VerificationRecord,
    state: WatchBranchRecord,
    previous: Verdict | None,
    judged: runner.Judged,
    found: schedule.BisectResult | None,
    mirror: schedule.History,
    *,
    links_url: str,
) -> Outcome:
    commit = Commit(row.commit, row.author, row.email, row.subject, row.committed_at or utcnow())
    verdict, reason, node = judged.verdict, judged.reason, judged.node
    if found is not None and found.runs > 0:
        # A bisect is over: the news is the branch's, told of the commit that broke it
        # (the change of colour was told when the newest commit failed).
        previous = Verdict.PASSED
    broken_by = mirror.commit(found.culprit) if found is not None else None
    run_url = f"{links_url}/api/runs/{row.run_id}" if row.run_id else None
    return Outcome(
        watch=watch.name,
        owner=watch.owner,
        repository=watch.repository,
        branch=row.branch,
        commit=commit,
        verdict=verdict,
        previous=previous,
        run_id=row.run_id,
        run_url=run_url,
        report_urls=(f"{run_url}/reports", f"{run_url}/junit") if run_url else (),
        reason=reason,
        node=node,
        seconds=judged.seconds,
        broken_by=broken_by,
        last_good=found.last_good if found is not None else state.last_good,
        links={
            "watch": f"{links_url}/api/watches/{watch.name}?owner={watch.owner}",
            "badge": f"{links_url}/api/badges/{watch.id}/{row.branch}.svg",
            "feed": f"{links_url}/api/feeds/{watch.id}.atom",
        },
    )


def culprit_row(session: Any, watch_id: str, branch: str, sha: str) -> VerificationRecord | None:
    found: VerificationRecord | None = session.scalars(
        select(VerificationRecord)
        .where(
            VerificationRecord.watch_id == watch_id,
            VerificationRecord.branch == branch,
            VerificationRecord.commit == sha,
            VerificationRecord.phase == Phase.DONE.value,
        )
        .order_by(VerificationRecord.id.desc())
    ).first()
    return found
