"""The JUnit report of a run, from data: deploy/junit.py, deploy/phases.py and the nodes' own
report files (deploy/junit_files.py), with what a node may send at its worst."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from stratuslab.deploy import junit, junit_files
from stratuslab.deploy.junit import report
from stratuslab.deploy.junit_files import ReportFile, xml_files
from tests.deploy.junitdata import (
    T0,
    cases,
    checked,
    completes,
    line,
    mark,
    node,
    outcome,
    phase,
    run,
)

REASON = "web.1: deployment recipe of apps/web exited with 3: bad config"
EVERYONE = ("db.1", "web.1", "web.2")


def passing(who: str) -> list[object]:
    if who.startswith("db"):
        return phase(who, "deployment", "db ready")
    return [
        *phase(who, "packages", "ok", start=1, took=1),
        *phase(who, "deployment", f"{who} deployed", start=3, took=4),
        *phase(who, "report", "reported", start=10, took=0.5),
    ]


def test_a_passing_run_is_a_suite_per_node_and_a_case_per_phase_of_each_instance() -> None:
    view = run(node("db.1"), node("web.1"), node("web.2"))
    lines = [x for who in EVERYONE for x in passing(who)]
    root = checked(report(view, lines))

    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["apps.demo.db", "apps.demo.web"]
    web = [c.get("name") for c in suites["apps.demo.web"].findall("testcase")]
    assert web == [
        f"{who} {p}"
        for who in ("web.1", "web.2")
        for p in ("provisioning", "packages", "deployment", "report")
    ]
    found = cases(root)
    assert {outcome(c) for c in found.values()} == {"passed"}
    deployment = found["web.2 deployment"]
    assert deployment.get("classname") == "apps.demo.web"
    assert deployment.get("time") == "4.000"
    assert deployment.findtext("system-out") == "web.2 deployed\n"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("10", "0", "0")
    assert suites["apps.demo.web"].get("timestamp") == "2026-03-01T10:00:00"


def test_a_failed_phase_carries_the_abort_reason_and_the_end_of_its_output() -> None:
    view = run(
        node("db.1"),
        node("web.1", abort=REASON, completed="Provisioning"),
        node("web.2", completed="Provisioning"),
        state="Aborted",
        abort_reason=REASON,
        phases={"db": ["deployment"], "web": ["packages", "deployment", "post-install"]},
    )
    output = [f"line {i}" for i in range(2000)] + ["bad config"]
    lines = [
        *phase("db.1", "deployment", "db ready"),
        *phase("web.1", "packages", "ok"),
        *phase("web.1", "deployment", *output, start=3, code=3),
        mark("web.2", "packages", "start", t=1),
        mark("web.2", "packages", "end", t=9, code=143, stopped=True),  # stopped by the abort
    ]
    root = checked(report(view, lines))
    found = cases(root)

    failure = found["web.1 deployment"].find("failure")
    assert failure is not None
    assert failure.get("message") == REASON
    assert (failure.text or "").startswith(REASON + "\n\n")
    assert (failure.text or "").endswith("line 1999\nbad config\n")
    assert len((failure.text or "").encode()) < junit.FAILURE_OUTPUT + 200
    assert (found["web.1 deployment"].findtext("system-out") or "").endswith("bad config\n")
    assert outcome(found["web.1 packages"]) == "passed"
    assert outcome(found["db.1 deployment"]) == "passed"
    stopped = found["web.2 packages"].find("skipped")
    assert stopped is not None and "stopped: the run left Executing" in stopped.get("message", "")
    for never in ("web.1 post-install", "web.2 deployment", "web.2 post-install"):
        skipped = found[never].find("skipped")
        assert skipped is not None, never
        assert skipped.get("message") == f"not run: the run aborted first: {REASON}"
    assert (root.get("failures"), root.get("errors"), root.get("skipped")) == ("1", "0", "4")


def test_hostile_output_is_escaped_and_stripped_of_what_xml_forbids() -> None:
    hostile = (
        "\x1b[31mred\x1b[0m \x00nul \x07bell \x1b]0;title\x07 ]]> <b>&amp;</b> \"'"
        " \ufffe\uffff \ud800 é 漢 😀"
    )
    view = run(node("web.1", abort=f"web.1: {hostile}", completed="Provisioning"))
    view["phases"] = {"web": ["deployment"]}
    lines = phase("web.1", "deployment", hostile, code=1)
    root = checked(report(view, lines))
    case = cases(root)["web.1 deployment"]
    shown = "red nul bell  ]]> <b>&amp;</b> \"'   é 漢 😀"
    assert case.findtext("system-out") == shown + "\n"
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == f"web.1: {shown}"


def test_each_case_keeps_the_end_of_its_output_and_says_so() -> None:
    view = run(node("web.1"), phases={"web": ["deployment"]})
    lines = phase("web.1", "deployment", *(f"{i:07d}" + "x" * 992 for i in range(200)))
    shown = cases(checked(report(view, lines)))["web.1 deployment"].findtext("system-out") or ""
    assert shown.startswith("[output cut: its first ")
    kept = shown.split("\n", 1)[1]
    assert len(kept.encode()) <= junit.MAX_CASE_OUTPUT
    assert kept.endswith(f"{199:07d}" + "x" * 992 + "\n")
    assert len(kept.encode()) > junit.MAX_CASE_OUTPUT - 1001  # as much as fits


def test_the_document_holds_a_bounded_output_in_all_failing_cases_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(junit, "MAX_OUTPUT", 3 * 2**10)
    names = [f"web.{i}" for i in range(1, 5)]
    view = run(
        *(node(n) for n in names[:-1]),
        node("web.4", abort="web.4: broken", completed="Provisioning"),
        phases={"web": ["deployment"]},
    )
    lines = [
        x for n in names for x in phase(n, "deployment", "y" * 2000, code=3 if n == "web.4" else 0)
    ]
    found = cases(checked(report(view, lines)))
    assert "y" * 2000 in (found["web.4 deployment"].findtext("system-out") or "")
    total = sum(len((c.findtext("system-out") or "").encode()) for c in found.values())
    assert total < 3 * 2**10 + 4 * 200  # the bound, and the notes that say what was cut
    assert "[output cut" in (found["web.3 deployment"].findtext("system-out") or "")


def test_a_lost_node_fails_its_provisioning_and_what_it_was_doing_does_not_finish() -> None:
    lost = "its machine stopped (STOPPED)"
    view = run(
        node("web.1", lost=True, abort=f"web.1: {lost}", completed="Provisioning"),
        state="Aborted",
        abort_reason=f"web.1: {lost}",
        events=[{"kind": "lost", "node_instance": "web.1", "fields": {"reason": lost}}],
    )
    lines = [*phase("web.1", "packages", "ok"), mark("web.1", "deployment", "start", t=5)]
    found = cases(checked(report(view, lines)))
    provisioning = found["web.1 provisioning"].find("failure")
    assert provisioning is not None and provisioning.get("message") == f"lost: {lost}"
    assert outcome(found["web.1 packages"]) == "passed"
    unfinished = found["web.1 deployment"].find("skipped")
    assert unfinished is not None and unfinished.get("message") == "did not finish: web.1 was lost"
    assert found["web.1 report"].find("skipped") is not None


def test_a_node_that_could_not_be_provisioned_fails_unless_it_was_tolerated() -> None:
    reason = "no capacity left on the cloud"
    failed = {"kind": "provisioning-failed", "fields": {"reason": reason}}
    view = run(
        node("db.1", provisioning="failed", instance_id=None, completed=None),
        node("web.1", provisioning="failed", removed=True, instance_id=None, completed=None),
        node("web.2", instance_id=None, provisioning="pending", completed=None),
        state="Aborted",
        abort_reason=f"node db: 1 instance(s) failed to start (0 allowed): {reason}",
        events=[
            {**failed, "node_instance": "db.1"},
            {**failed, "node_instance": "web.1"},
        ],
    )
    found = cases(checked(report(view, [])))
    db = found["db.1 provisioning"].find("failure")
    assert db is not None and db.get("message") == reason
    assert found["db.1 deployment"].find("skipped").get("message") == (  # type: ignore[union-attr]
        "not run: db.1 could not be provisioned"
    )
    # web.1 failed too, within the node's allowance, and was left out; but the run aborted
    # for db.1, so its failure counts.
    assert outcome(found["web.1 provisioning"]) == "failed"
    web2 = found["web.2 provisioning"].find("skipped")
    assert web2 is not None and web2.get("message", "").startswith("not provisioned: the run ")


def test_a_tolerated_provisioning_failure_is_skipped_on_a_run_that_went_on() -> None:
    view = run(
        node("web.1", provisioning="failed", removed=True, instance_id=None, completed=None),
        node("web.2"),
        phases={"web": []},
        events=[
            {"kind": "provisioning-failed", "node_instance": "web.1", "fields": {"reason": "x"}}
        ],
    )
    found = cases(checked(report(view, [])))
    skipped = found["web.1 provisioning"].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == "left out, within the node's allowance: x"


def test_without_the_agents_word_the_outcome_is_inferred_from_completions_and_the_abort() -> None:
    """An older agent, or a node that is not ours, sends output only."""
    view = run(
        node("db.1"),
        node("web.1", abort=REASON, completed="Provisioning"),
        state="Aborted",
        abort_reason=REASON,
        phases={"db": ["deployment"], "web": ["pre-install", "deployment", "report"]},
        events=completes("db.1") + completes("web.1", states=("Provisioning",)),
    )
    lines = [
        line("db.1", "deployment", "db ready", t=1),
        line("web.1", "pre-install", "pre", t=1),
        line("web.1", "deployment", "bad config", t=2, stream="stderr"),
    ]
    found = cases(checked(report(view, lines)))
    assert outcome(found["db.1 deployment"]) == "passed"
    assert outcome(found["web.1 pre-install"]) == "passed"
    failure = found["web.1 deployment"].find("failure")
    assert failure is not None and failure.get("message") == REASON
    assert outcome(found["web.1 report"]) == "skipped"


def test_a_recipes_own_abort_fails_the_phase_that_raised_it() -> None:
    reason = "web.1: database unreachable"  # ss-abort, then the recipe exits 0
    view = run(
        node("web.1", abort=reason, completed="Provisioning"),
        state="Aborted",
        abort_reason=reason,
        phases={"web": ["packages", "deployment"]},
    )
    lines = [*phase("web.1", "packages", "ok"), *phase("web.1", "deployment", "trying", start=3)]
    found = cases(checked(report(view, lines)))
    assert outcome(found["web.1 packages"]) == "passed"
    failure = found["web.1 deployment"].find("failure")
    assert failure is not None and failure.get("message") == reason


def test_a_timed_out_run_fails_the_phase_it_stopped() -> None:
    reason = "the run was not Ready within 60 s"
    view = run(
        node("web.1", completed="Provisioning"),
        state="Aborted",
        abort_reason=reason,
        timed_out=True,
        phases={"web": ["deployment"]},
    )
    lines = [
        mark("web.1", "deployment", "start", t=1),
        line("web.1", "deployment", "waiting for ever", t=2),
        mark("web.1", "deployment", "end", t=61, code=143, stopped=True),
    ]
    failure = cases(checked(report(view, lines)))["web.1 deployment"].find("failure")
    assert failure is not None and failure.get("message") == reason


def test_every_round_of_a_scalable_run_is_a_case_of_its_own() -> None:
    view = run(node("web.1"), phases={"web": ["deployment", "report"]})
    lines = [
        *phase("web.1", "deployment", "deployed", start=1),
        *phase("web.1", "report", "first", start=5),
        *phase("web.1", "on-vm-add", "vm_add web web.2", start=10),
        *phase("web.1", "report", "second", start=15),
    ]
    found = cases(checked(report(view, lines)))
    assert [n for n in found if n.startswith("web.1")] == [
        "web.1 provisioning",
        "web.1 deployment",
        "web.1 on-vm-add",
        "web.1 report",
        "web.1 report (round 2)",
    ]
    assert found["web.1 report (round 2)"].findtext("system-out") == "second\n"


def test_a_node_cannot_make_cases_without_end(monkeypatch: pytest.MonkeyPatch) -> None:
    view = run(node("web.1"), phases={"web": ["report"]})
    lines = [x for i in range(300) for x in phase("web.1", "report", f"round {i}", start=i)]
    found = cases(checked(report(view, lines)))
    assert len(found) == 1 + junit.phases.MAX_ROUNDS
    last = found[f"web.1 report (round {junit.phases.MAX_ROUNDS})"].findtext("system-out") or ""
    assert last.endswith("round 299\n")


def test_lines_of_no_phase_and_markers_that_are_not_ours_are_kept_as_output() -> None:
    view = run(node("db.1"), phases={"db": []})
    lines = [
        {"node_instance": "db.1", "t": T0, "state": "", "recipe": "", "text": "hello"},
        {**line("db.1", "deployment", "x"), "stream": "phase", "text": "{not json"},
        {**line("db.1", "deployment", "x"), "stream": "phase", "text": '{"event": "start"}'},
    ]
    found = cases(checked(report(view, lines)))
    assert found["db.1 output"].findtext("system-out") == "hello\n"
    assert outcome(found["db.1 output"]) == "passed"


# -- the nodes' own report files --------------------------------------------------------

JUNIT = b"""<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="selenium">
  <testsuite name="ui" tests="99" failures="0" time="1.5">
    <properties><property name="browser" value="firefox"/></properties>
    <testcase name="login" classname="ui.Login" time="1.0"/>
    <testcase name="logout" classname="ui.Login" time="0.5">
      <failure message="button missing">trace &lt;here&gt;</failure>
    </testcase>
    <testsuite name="nested" time="oops">
      <testcase name="deep" classname="ui.Deep" time="0.25"><skipped/></testcase>
    </testsuite>
  </testsuite>
</testsuites>
"""
SINGLE = b'<testsuite name="api"><testcase name="get" time="0.1"><error/></testcase></testsuite>'
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<testsuite name="bomb"><testcase name="&lol9;"/></testsuite>
"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE t [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<testsuite name="xxe"><testcase name="&secret;"/></testsuite>
"""


def files(*named: tuple[str, bytes]) -> list[ReportFile]:
    return [ReportFile("test.1", name, data) for name, data in named]


def test_the_junit_suites_of_report_files_are_taken_flat_and_counted_again() -> None:
    view = run(node("test.1"), phases={"test": []})
    reports = files(
        ("reports/selenium.xml", JUNIT),
        ("reports/api.xml", SINGLE),
        ("reports/pom.xml", b"<project><testsuite name='not a report'/></project>"),
        ("reports/broken.xml", b"<testsuite><testcase>"),
    )
    root = checked(report(view, [], reports))
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["apps.demo.test", "ui", "nested", "api"]
    ui = suites["ui"]
    assert (ui.get("tests"), ui.get("failures"), ui.get("time")) == ("2", "1", "1.500")
    assert ui.find("properties/property[@name='stratus.report']").get("value") == (  # type: ignore[union-attr]
        "test.1:reports/selenium.xml"
    )
    assert ui.find("properties/property[@name='browser']") is not None
    assert ui.find("testcase/failure").text == "trace <here>"  # type: ignore[union-attr]
    assert (suites["nested"].get("skipped"), suites["nested"].get("time")) == ("1", "0.250")
    assert suites["api"].get("errors") == "1"
    comments = report(view, [], reports).decode()
    assert "test.1: reports/broken.xml left out: it is not well-formed XML" in comments
    assert "pom.xml" not in comments  # XML that is no JUnit report is no concern of ours
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "1")


def test_an_entity_bomb_or_an_external_entity_is_refused_at_once() -> None:
    view = run(node("test.1"), phases={"test": []})
    started = time.monotonic()
    document = report(view, [], files(("reports/bomb.xml", BOMB), ("reports/xxe.xml", EXTERNAL)))
    assert time.monotonic() - started < 5  # an expanded bomb takes minutes and gigabytes
    root = checked(document)
    assert [s.get("name") for s in root.findall("testsuite")] == ["apps.demo.test"]
    text = document.decode()
    assert "reports/bomb.xml left out: it declares a DTD" in text
    assert "reports/xxe.xml left out: it declares a DTD" in text
    assert "root:" not in text and "lol" not in text


def test_report_files_give_at_most_so_many_suites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(junit_files, "MAX_SUITES", 2)
    view = run(node("test.1"), phases={"test": []})
    document = report(view, [], files(("reports/a.xml", JUNIT), ("reports/b.xml", SINGLE)))
    root = checked(document)
    assert [s.get("name") for s in root.findall("testsuite")] == ["apps.demo.test", "ui", "nested"]
    assert b"at most 2 are taken from report files" in document


def test_too_deep_a_report_file_is_refused() -> None:
    deep = b"<testsuite>" + b"<a>" * 100 + b"</a>" * 100 + b"</testsuite>"
    suites, note = junit_files.suites(ReportFile("t.1", "reports/deep.xml", deep), 10)
    assert (
        suites == [] and note == "t.1: reports/deep.xml left out: its elements nest deeper than 64"
    )


def archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as packed:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            packed.addfile(info, io.BytesIO(data))
    return path


def test_only_xml_files_under_reports_are_read_from_the_archives(tmp_path: Path) -> None:
    one = archive(
        tmp_path / "web.1.tar.gz",
        {
            "logs/agent.log": b"x" * 100_000,
            "logs/junit.xml": JUNIT,  # the agent's logs: not the node's reports
            "reports/junit.XML": JUNIT,
            "reports/notes.txt": b"<testsuite/>",
        },
    )
    broken = tmp_path / "db.1.tar.gz"
    broken.write_bytes(b"\x1f\x8bnot really")
    found, notes = xml_files([("web.1", one), ("db.1", broken)])
    assert [(f.node_instance, f.name, f.data) for f in found] == [
        ("web.1", "reports/junit.XML", JUNIT)
    ]
    assert len(notes) == 1 and notes[0].startswith("db.1: its report archive could not be read")


def test_report_files_are_read_within_their_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(junit_files, "MAX_XML", 3 * len(SINGLE))
    packed = archive(tmp_path / "t.tar.gz", {f"reports/{i}.xml": SINGLE for i in range(5)})
    found, notes = xml_files([("t.1", packed)])
    assert [f.name for f in found] == ["reports/0.xml", "reports/1.xml", "reports/2.xml"]
    assert notes[0] == "t.1: reports/3.xml left out: report files are read up to 0 MiB in all"


def test_unpacking_stops_at_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(junit_files, "MAX_SCAN", 2**20)
    big = archive(tmp_path / "big.tar.gz", {"logs/huge.log": b"\0" * 4 * 2**20})
    small = archive(tmp_path / "small.tar.gz", {"reports/a.xml": SINGLE})
    found, notes = xml_files([("a.1", big), ("b.1", small)])
    assert found == []
    assert notes == [
        "a.1: report files left out from here on: the report archives unpack to more than 1 MiB"
    ]


def test_a_report_is_well_formed_even_for_a_run_with_no_nodes() -> None:
    root = checked(report(run(phases={}), []))
    assert root.findall("testsuite") == [] and root.get("tests") == "0"
    ET.fromstring(report(run(), [], []))
