"""`stratus quota` and `stratus usage` in-process against the in-process API: administrators
set quotas (limits not given are kept), users read theirs beside what they hold, a request
over a quota exits 68 with one line saying by how much, usage comes out as JSON for billing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from stratuslab.db.models import UsageRecord
from stratuslab.db.session import session_scope
from stratuslab.principal import Principal
from tests.api.test_session import services_of
from tests.support import CliResult

Cli = Callable[..., CliResult]


def test_an_administrator_sets_a_quota_and_limits_not_given_are_kept(
    stratus: Cli, bob: Cli
) -> None:
    done = stratus("quota", "set", "bob", "--instances", "2", "--cpu", "4")
    assert done.code == 0, done.err
    assert done.out.strip() == "user:bob on all clouds: instances 2, cpu 4"
    assert stratus("quota", "set", "bob", "--ram", "2048").out.strip() == (
        "user:bob on all clouds: instances 2, cpu 4, ram_mb 2048"
    )
    assert "cpu" not in stratus("quota", "set", "bob", "--cpu", "none").out
    shown = json.loads(stratus("quota", "show", "--user", "bob", "-o", "json").out)
    (quota,) = shown["quotas"]
    assert quota["limits"] == {"instances": 2, "cpu": None, "ram_mb": 2048, "storage_gib": None}
    assert quota["usage"]["instances"] == 0

    mine = bob("quota", "show")
    assert mine.code == 0 and "quotas of bob" in mine.out and "0 / 2" in mine.out
    assert "bob holds 0 instance(s)" in mine.out


def test_over_the_quota_a_command_exits_68_saying_by_how_much(stratus: Cli, bob: Cli) -> None:
    stratus("quota", "set", "bob", "--instances", "2")
    refused = bob("instance", "run", "debian-12", "-n", "3")
    assert refused.code == 68
    (line,) = refused.err.strip().splitlines()
    assert line.startswith("error: over quota: user bob's quota (all clouds): ")
    assert "instances: 0 in use + 3 asked > quota 2 (over by 1)" in line
    assert json.loads(bob("instance", "list", "-o", "json").out) == []

    assert bob("instance", "run", "debian-12", "-n", "2").code == 0
    stratus("quota", "set", "bob", "--instances", "1")  # below what bob holds
    shown = bob("quota", "show")
    assert "2 / 1 over" in shown.out and "nothing new starts" in shown.out
    assert bob("instance", "run", "debian-12").code == 68


def test_quota_commands_refuse_what_they_cannot_do(stratus: Cli, bob: Cli) -> None:
    assert bob("quota", "set", "bob", "--instances", "10").code == 77  # not an administrator
    assert bob("quota", "show", "--user", "alice").code == 66  # another user's: not there
    assert stratus("quota", "set", "physics", "--group", "--instances", "5").code == 66
    assert stratus("quota", "set", "bob").code == 64  # no limit given
    bad = stratus("quota", "set", "bob", "--instances", "-3")
    assert bad.code == 64 and "below 0" in bad.err
    assert stratus("quota", "set", "bob", "--cpu", "lots").code == 64
    assert stratus("quota", "show", "--all").code == 0


def test_usage_prints_json_for_billing_and_a_table_for_people(
    stratus: Cli, bob: Cli, api: TestClient
) -> None:
    assert bob("instance", "run", "debian-12", "--cpu", "2", "--ram", "1024").code == 0
    start = datetime(2021, 6, 1, 8, 0, tzinfo=UTC)
    with session_scope(services_of(api).engine) as session:
        session.execute(
            update(UsageRecord).values(started_at=start, ended_at=start + timedelta(hours=3))
        )
    window = ("--since", "2021-06-01", "--until", "2021-06-02")
    report = json.loads(bob("usage", *window, "-o", "json").out)
    assert report["total"] == {
        "instance_hours": 3.0,
        "vcpu_hours": 6.0,
        "memory_gib_hours": 3.0,
        "intervals": 1,
    }
    assert report["since"] == "2021-06-01T00:00:00+00:00" and report["user"] == "bob"
    people = stratus("usage", *window, "--all", "--by", "cloud")
    assert people.code == 0 and "local" in people.out and "6.000" in people.out
    assert "total" in people.out
    assert "No instance ran" in stratus("usage", *window).err  # alice ran nothing
    assert bob("usage", "--user", "alice").code == 66
    assert stratus("usage", "--since", "tomorrow").code == 65


def test_quota_show_says_what_volumes_hold_against_the_storage_quota(
    stratus: Cli, bob: Cli, api: TestClient
) -> None:
    assert stratus("quota", "set", "bob", "--storage", "10").code == 0
    volumes = services_of(api).volumes(Principal.for_user("bob"))
    volumes.create("data", size_bytes=3 << 30)
    shown = bob("quota", "show")
    assert shown.code == 0 and "3 / 10" in shown.out and "3 GiB of volumes" in shown.out
    assert "not enforced" not in shown.out + shown.err
    usage = json.loads(bob("quota", "show", "-o", "json").out)["usage"]["*"]
    assert usage["storage_gib"] == 3
