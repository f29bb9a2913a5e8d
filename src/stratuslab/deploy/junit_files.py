"""The nodes' own JUnit reports: XML files in their report archives, read within bounds.

A report archive comes from a node, which is not to be trusted: it is unpacked as a stream and
only so far (``MAX_SCAN`` bytes in all), only regular files under ``reports/`` named ``*.xml``
are read (``MAX_XML`` bytes in all), and each is parsed without a DTD (:func:`parse`): a file
that declares one is refused, so that no entity is ever expanded (the "billion laughs") and
nothing outside is fetched. Of what parses, the ``<testsuite>`` elements are kept
(``MAX_SUITES`` in all), each copied flat (a suite nested in another becomes a suite of its
own) with its counts made again from its test cases, so that they always agree.
"""

from __future__ import annotations

import copy
import gzip
import io
import math
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.parsers import expat

MAX_XML = 10 * 2**20  # bytes of report files read, in all
MAX_SCAN = 512 * 2**20  # bytes unpacked from the archives while looking for them, in all
MAX_SUITES = 1000  # test suites taken from report files, in all
MAX_DEPTH = 64  # nesting of elements in a report file
_CHUNK = 2**16
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: str) -> str:
    """``text`` as XML 1.0 can hold it: without ANSI escape sequences or forbidden characters
    (control characters, lone surrogates, U+FFFE and U+FFFF)."""
    return _NOT_XML.sub("", _ANSI.sub("", text))


@dataclass(frozen=True)
class ReportFile:
    node_instance: str
    name: str  # its path in the archive: reports/...
    data: bytes


class Refused(Exception):
    """A report file that is not read, and why."""


class _Budget:
    def __init__(self) -> None:
        self.scanned = 0
        self.read = 0


class _Counted:
    """A stream that stops (``Refused``) once ``budget`` has unpacked ``MAX_SCAN`` bytes."""

    def __init__(self, source: io.BufferedIOBase, budget: _Budget) -> None:
        self.source = source
        self.budget = budget

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size if 0 <= size <= _CHUNK else _CHUNK)
        self.budget.scanned += len(data)
        if self.budget.scanned > MAX_SCAN:
            raise Refused(f"the report archives unpack to more than {MAX_SCAN // 2**20} MiB")
        return data


def xml_files(archives: Sequence[tuple[str, Path]]) -> tuple[list[ReportFile], list[str]]:
    """The XML files of each node instance's report archive, in the archives' order, and
    notes on what was left out."""
    budget, files, notes = _Budget(), [], []
    for node_instance, path in archives:
        try:
            with gzip.open(path, "rb") as unpacked:
                stream = _Counted(unpacked, budget)
                with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
                    for member in archive:
                        if not _wanted(member):
                            continue
                        if budget.read + member.size > MAX_XML:
                            notes.append(
                                f"{node_instance}: {member.name} left out: report files are "
                                f"read up to {MAX_XML // 2**20} MiB in all"
                            )
                            continue
                        extracted = archive.extractfile(member)
                        data = extracted.read(member.size) if extracted is not None else b""
                        budget.read += len(data)
                        files.append(ReportFile(node_instance, member.name, data))
        except Refused as exc:
            notes.append(f"{node_instance}: report files left out from here on: {exc}")
            break
        except (OSError, EOFError, tarfile.TarError) as exc:
            notes.append(f"{node_instance}: its report archive could not be read: {exc}")
    return files, notes


def _wanted(member: tarfile.TarInfo) -> bool:
    return (
        member.isfile()
        and member.name.startswith("reports/")
        and member.name.lower().endswith(".xml")
    )


def parse(data: bytes) -> ET.Element:
    """An XML document from a node, parsed by expat without any DTD: one that declares a DTD
    or an entity is refused (``Refused``), so is one nested deeper than ``MAX_DEPTH``."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    depth = [0]

    def refuse(*_: object) -> None:
        raise Refused("it declares a DTD: report files are read without one")

    def start(tag: str, attributes: dict[str, str]) -> None:
        depth[0] += 1
        if depth[0] > MAX_DEPTH:
            raise Refused(f"its elements nest deeper than {MAX_DEPTH}")
        builder.start(tag, attributes)

    def end(tag: str) -> None:
        depth[0] -= 1
        builder.end(tag)

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise Refused(f"it is not well-formed XML: {exc}") from None
    return builder.close()


def suites(file: ReportFile, room: int) -> tuple[list[ET.Element], str | None]:
    """The test suites of a report file, at most ``room`` of them, each flat and counted
    again; and a note when the file is left out (not JUnit files are left out silently)."""
    try:
        root = parse(file.data)
    except Refused as exc:
        return [], f"{file.node_instance}: {file.name} left out: {exc}"
    if root.tag not in ("testsuite", "testsuites"):
        return [], None
    found = [e for e in root.iter("testsuite")]
    kept = [_flat(e, file) for e in found[:room]]
    if len(found) > room:
        return kept, (
            f"{file.node_instance}: {file.name}: {len(found) - room} test suite(s) left out: "
            f"at most {MAX_SUITES} are taken from report files"
        )
    return kept, None


def _flat(suite: ET.Element, file: ReportFile) -> ET.Element:
    copied = ET.Element("testsuite")
    for name in ("name", "timestamp", "hostname", "id", "package"):
        if name in suite.attrib:
            copied.set(name, suite.attrib[name])
    properties = ET.SubElement(copied, "properties")
    origin = f"{file.node_instance}:{file.name}"
    ET.SubElement(properties, "property", name="stratus.report", value=origin)
    for child in suite:
        if child.tag == "properties":
            properties.extend(copy.deepcopy(p) for p in child if p.tag == "property")
    cases = [copy.deepcopy(c) for c in suite if c.tag == "testcase"]
    for case in cases:  # what JUnit's schema requires of a test case, where a file lacks it
        case.set("name", case.get("name") or "(unnamed)")
        case.set("classname", case.get("classname") or suite.get("name") or "report")
        if seconds(case.get("time")) is None:
            case.set("time", "0.000")
    copied.extend(cases)
    copied.extend(copy.deepcopy(c) for c in suite if c.tag in ("system-out", "system-err"))
    counts = {
        "tests": len(cases),
        "failures": sum(1 for c in cases if c.find("failure") is not None),
        "errors": sum(1 for c in cases if c.find("error") is not None),
        "skipped": sum(1 for c in cases if c.find("skipped") is not None),
    }
    for name, count in counts.items():
        copied.set(name, str(count))
    stated = seconds(suite.get("time"))
    total = sum(seconds(c.get("time")) or 0.0 for c in cases)
    copied.set("time", f"{stated if stated is not None else total:.3f}")
    return copied


def seconds(text: str | None) -> float | None:
    """A JUnit time attribute as a number of seconds; None when it is not one."""
    try:
        value = float((text or "").replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
