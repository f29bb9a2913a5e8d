"""Runs as deploy/junit.py reads them, made by hand, and the checks every JUnit document of
ours must pass, whatever a consumer's schema (tests/deploy/test_junit.py, tests/api)."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

CREATED = "2026-03-01T10:00:00+00:00"
T0 = 1_772_359_200.0  # CREATED, in seconds since 1970


def node(name: str, **facts: Any) -> dict[str, Any]:
    """A node instance as RunService.view shows it: provisioned and through Ready unless told."""
    base, _, index = name.rpartition(".")
    return {
        "name": name,
        "node": base,
        "index": int(index),
        "instance_id": f"i-{base}{index}",
        "provisioning": "ready",
        "removed": False,
        "lost": False,
        "completed": "Ready",
        "hostname": "10.0.0.1",
        "abort": None,
        **facts,
    }


def run(*nodes: dict[str, Any], **facts: Any) -> dict[str, Any]:
    """A run's view with its phases and events added, as JUnitReports.of_run hands it."""
    return {
        "id": "6a1f0c1e-0000-4000-8000-000000000001",
        "module": "apps/demo/3",
        "state": "Done",
        "abort_reason": None,
        "timed_out": False,
        "cancelled": False,
        "created_at": CREATED,
        "nodes": list(nodes),
        "phases": {"db": ["deployment"], "web": ["packages", "deployment", "report"]},
        "events": [],
        "notes": [],
        **facts,
    }


def completes(*names: str, states: tuple[str, ...] = ("Provisioning", "Executing")) -> list[Any]:
    return [
        {"kind": "complete", "node_instance": n, "fields": {"state": s}, "at": CREATED}
        for n in names
        for s in states
    ]


def mark(who: str, phase: str, event: str, n: int = 1, t: float = 0.0, **end: Any) -> Any:
    state = "SendingReports" if phase == "report" else "Executing"
    data = {"event": event, "n": n, "module": f"apps/{who.partition('.')[0]}", **end}
    return {
        "node_instance": who,
        "t": T0 + t,
        "state": state,
        "recipe": phase,
        "stream": "phase",
        "text": json.dumps(data),
    }


def line(who: str, phase: str, text: str, t: float = 0.0, stream: str = "stdout") -> Any:
    state = "SendingReports" if phase == "report" else "Executing"
    return {
        "node_instance": who,
        "t": T0 + t,
        "state": state,
        "recipe": phase,
        "stream": stream,
        "text": text,
    }


def phase(
    who: str, name: str, *output: str, start: float = 1.0, took: float = 2.0, code: int = 0
) -> list[Any]:
    """The lines of a phase of one recipe that ran from ``start`` for ``took`` seconds."""
    return [
        mark(who, name, "start", t=start),
        *(line(who, name, text, t=start + took / 2) for text in output),
        mark(who, name, "end", t=start + took, code=code, stopped=False),
    ]


def checked(document: bytes) -> ET.Element:
    """The document parsed, after the checks a CI tool relies on: a declaration, every suite's
    counts those of its test cases, its time their sum, the root's the sums of its suites'."""
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(document)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert list(root.iter("testsuite")) == suites  # flat: no suite inside a suite
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(cases), suite.get("name")
        for count, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
            assert int(suite.get(count, "-1")) == sum(c.find(tag) is not None for c in cases)
        if suite.find("properties/property[@name='stratus.run']") is not None:  # ours
            total = sum(float(c.get("time", "0")) for c in cases)
            assert abs(float(suite.get("time", "-1")) - total) < 1e-6
        for case in cases:
            assert case.get("name") and case.get("classname") is not None
            assert float(case.get("time", "-1")) >= 0
            assert sum(case.find(tag) is not None for tag in ("failure", "error", "skipped")) <= 1
    for count in ("tests", "failures", "errors", "skipped"):
        assert int(root.get(count, "-1")) == sum(int(s.get(count, "0")) for s in suites)
    assert (
        abs(float(root.get("time", "-1")) - sum(float(s.get("time", "0")) for s in suites)) < 1e-2
    )
    return root


def cases(root: ET.Element) -> dict[str, ET.Element]:
    """Every test case of the document, by name."""
    return {c.get("name", ""): c for c in root.iter("testcase")}


def outcome(case: ET.Element) -> str:
    for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        if case.find(tag) is not None:
            return name
    return "passed"
