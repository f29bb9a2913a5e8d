"""The schedule on real repositories: what is queued, held, skipped and bisected, on both
stores. Verdicts are given by the test (the run that would make them is the verifier's, tested
end to end elsewhere); the commits, their order and git's bisect are real."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.db.models import utcnow
from stratuslab.db.session import engine_for, session_scope
from stratuslab.db.verify_models import (
    NotificationRecord,
    VerificationRecord,
    WatchBranchRecord,
    WatchRecord,
)
from stratuslab.verify import schedule
from stratuslab.verify.git import Mirror
from stratuslab.verify.gitcache import Repositories
from stratuslab.verify.values import Phase, Verdict
from tests.api.stores import database
from tests.verify.gitserver import GitServer, Repo


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with database(request.param, tmp_path) as url:
        yield engine_for(url)


pytestmark = pytest.mark.spawns


@pytest.fixture
def repo(git_server: GitServer) -> Repo:
    return git_server.create()


@pytest.fixture
def repositories(tmp_path: Path) -> Repositories:
    return Repositories(tmp_path / "cache")


def _watch(engine: Engine, repo: Repo, *, branch: str = "main") -> str:
    with session_scope(engine) as session:
        session.add(
            WatchRecord(
                id="w" * 32,
                owner="alice",
                name="app",
                repository=repo.git_url,
                module="app",
                branches=[branch],
                every_s=60,
                secret="s" * 40,
            )
        )
    return "w" * 32


def _poll(
    engine: Engine, watch_id: str, repositories: Repositories, repo: Repo, branch: str = "main"
) -> Mirror:
    mirror = repositories.fetch(repo.git_url)
    with session_scope(engine) as session:
        watch = session.get(WatchRecord, watch_id)
        assert watch is not None
        schedule.observe(session, watch, branch, mirror.heads([branch])[branch], mirror)
    return mirror


def _passing(engine: Engine, watch_id: str, repositories: Repositories, repo: Repo) -> str:
    """A first commit, pushed, polled and verified as passing: what a bisect starts from."""
    good = repo.commit("good")
    repo.push()
    _verify_all(
        engine, watch_id, _poll(engine, watch_id, repositories, repo), lambda _: Verdict.PASSED
    )
    return good


def _verify_all(
    engine: Engine, watch_id: str, mirror: Mirror, verdict_of: Callable[[str], Verdict]
) -> list[tuple[str, str]]:
    """Play the verifier: start the next queued commit, give it its verdict, settle, until
    nothing is queued. Answers (commit, why) in the order they were verified."""
    done: list[tuple[str, str]] = []
    for _ in range(50):
        with session_scope(engine) as session:
            row = schedule.next_for(session, watch_id)
            if row is None:
                return done
            row.phase, row.started_at = Phase.RUNNING.value, utcnow()
        with session_scope(engine) as session:
            row = session.get(VerificationRecord, row.id)
            watch = session.get(WatchRecord, watch_id)
            assert row is not None and watch is not None
            row.phase, row.ended_at = Phase.DONE.value, utcnow()
            row.verdict = verdict_of(row.commit).value
            done.append((row.commit, row.why))
            schedule.settle(session, watch, row, mirror)
    raise AssertionError("the schedule never ran dry")


def _phases(engine: Engine, watch_id: str) -> dict[str, str]:
    with session_scope(engine) as session:
        rows = session.scalars(
            select(VerificationRecord)
            .where(VerificationRecord.watch_id == watch_id)
            .order_by(VerificationRecord.id)
        )
        return {row.commit: row.phase for row in rows}


def _branch(engine: Engine, watch_id: str) -> WatchBranchRecord:
    with session_scope(engine) as session:
        found = session.get(WatchBranchRecord, (watch_id, "main"))
        assert found is not None
        session.expunge(found)
        return found


def test_the_newest_commit_is_verified_first_and_a_pass_skips_the_held_ones(
    engine: Engine, repo: Repo, repositories: Repositories
) -> None:
    watch = _watch(engine, repo)
    first = repo.commit("first")
    repo.push()
    mirror = _poll(engine, watch, repositories, repo)
    assert _verify_all(engine, watch, mirror, lambda _: Verdict.PASSED) == [(first, "newest")]

    brought = [repo.commit(f"change {i}") for i in range(3)]
    repo.push()
    mirror = _poll(engine, watch, repositories, repo)
    phases = _phases(engine, watch)
    assert [phases[sha] for sha in brought] == ["held", "held", "queued"]
    assert _verify_all(engine, watch, mirror, lambda _: Verdict.PASSED) == [(brought[2], "newest")]
    phases = _phases(engine, watch)
    assert [phases[sha] for sha in brought] == ["skipped", "skipped", "done"]
    branch = _branch(engine, watch)
    assert (branch.verdict, branch.verdict_commit, branch.last_good) == (
        "passed",
        brought[2],
        brought[2],
    )


def test_a_break_across_eight_untested_commits_is_bisected_to_the_commit_that_made_it(
    engine: Engine, repo: Repo, repositories: Repositories
) -> None:
    watch = _watch(engine, repo)
    good = _passing(engine, watch, repositories, repo)

    commits = [repo.commit(f"change {i}") for i in range(8)]
    culprit = commits[4]  # it and every commit after it fail
    bad = set(commits[4:])
    repo.push()
    mirror = _poll(engine, watch, repositories, repo)
    verified = _verify_all(
        engine, watch, mirror, lambda sha: Verdict.FAILED if sha in bad else Verdict.PASSED
    )
    assert verified[0] == (commits[-1], "newest")
    assert all(why == "bisect" for _, why in verified[1:])
    assert len(verified) <= 1 + 3  # log2(8) bisect steps at most
    branch = _branch(engine, watch)
    assert branch.broken_by == culprit
    assert (branch.verdict, branch.verdict_commit) == ("failed", commits[-1])
    assert branch.since_commit == commits[-1]
    phases = _phases(engine, watch)
    assert phases[good] == "done"
    assert "held" not in phases.values() and "queued" not in phases.values()


def test_an_infrastructure_error_is_retried_once_then_skipped_by_the_bisect(
    engine: Engine, repo: Repo, repositories: Repositories
) -> None:
    watch = _watch(engine, repo)
    good = _passing(engine, watch, repositories, repo)
    commits = [repo.commit(f"change {i}") for i in range(4)]
    repo.push()
    mirror = _poll(engine, watch, repositories, repo)
    bad = set(commits[2:])
    flaky = commits[1]  # its machines never come up
    assert mirror.bisect_next([good], commits[-1]) == flaky  # the bisect's first step, so...

    def verdict(sha: str) -> Verdict:
        if sha == flaky:
            return Verdict.ERROR
        return Verdict.FAILED if sha in bad else Verdict.PASSED

    verified = _verify_all(engine, watch, mirror, verdict)
    assert [why for sha, why in verified if sha == flaky] in ([], ["bisect", "bisect"])
    # ... it is verified, errs, is verified once more, errs again, and is passed over.
    assert [why for sha, why in verified if sha == flaky] == ["bisect", "bisect"]
    branch = _branch(engine, watch)
    assert branch.broken_by == commits[2]


def test_the_first_verdict_of_a_new_head_alone_is_not_bisected(
    engine: Engine, repo: Repo, repositories: Repositories
) -> None:
    watch = _watch(engine, repo)
    [repo.commit(f"c{i}") for i in range(3)]
    repo.push()
    mirror = _poll(engine, watch, repositories, repo)
    verified = _verify_all(engine, watch, mirror, lambda _: Verdict.FAILED)
    assert len(verified) == 1  # no commit ever passed: nothing to bisect from
    assert _branch(engine, watch).broken_by is None


def test_a_forced_push_drops_what_it_rewrote(
    engine: Engine, repo: Repo, repositories: Repositories
) -> None:
    watch = _watch(engine, repo)
    base = _passing(engine, watch, repositories, repo)
    old = [repo.commit(f"old {i}") for i in range(2)]
    repo.push()
    _poll(engine, watch, repositories, repo)  # queued and held, not verified yet
    repo.reset(base)
    rewritten = repo.commit("rewritten")
    repo.push(force=True)
    _poll(engine, watch, repositories, repo)
    phases = _phases(engine, watch)
    assert [phases[sha] for sha in old] == ["skipped", "skipped"]
    assert phases[rewritten] == "queued"


def test_a_deleted_branch_drops_what_it_had_queued(
    engine: Engine, repo: Repo, repositories: Repositories
) -> None:
    watch = _watch(engine, repo, branch="topic")
    repo.commit("base")
    repo.push()
    repo.checkout("topic", new=True)
    queued = repo.commit("on topic")
    repo.push("topic")
    mirror = _poll(engine, watch, repositories, repo, branch="topic")
    assert _phases(engine, watch)[queued] == "queued"
    repo.delete("topic")
    mirror = repositories.fetch(repo.git_url)
    assert mirror.heads(["topic"])["topic"] is None
    with session_scope(engine) as session:
        found = session.get(WatchRecord, watch)
        assert found is not None
        schedule.observe(session, found, "topic", None, mirror)
    assert _phases(engine, watch)[queued] == "skipped"
    with session_scope(engine) as session:
        assert schedule.next_for(session, watch) is None


def test_a_watchs_history_is_bounded_oldest_first(
    engine: Engine, repo: Repo, repositories: Repositories, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedule, "MAX_KEPT", 2)
    watch = _watch(engine, repo)
    made = []
    for i in range(4):
        made.append(repo.commit(f"c{i}"))
        repo.push()
        mirror = _poll(engine, watch, repositories, repo)
        _verify_all(engine, watch, mirror, lambda _: Verdict.PASSED)
        if i == 0:  # what the outbox would hold of the first verdict: one sent, one not yet
            with session_scope(engine) as session:
                (first,) = session.scalars(select(VerificationRecord.id)).all()
                for state in ("sent", "pending"):
                    session.add(
                        NotificationRecord(
                            watch_id=watch, verification_id=first, channel="webhook",
                            target="https://hooks.example.org/x", state=state,
                        )
                    )  # fmt: skip
    kept = _phases(engine, watch)
    # The newest poll prunes before the newest verdict: at most MAX_KEPT settled, plus it.
    assert made[0] not in kept and made[-1] in kept and len(kept) <= 3
    with session_scope(engine) as session:  # what was sent of it went with it, not the rest
        left = session.scalars(select(NotificationRecord.state)).all()
    assert left == ["pending"]
