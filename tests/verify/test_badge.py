"""The status badge: well-formed SVG whatever its text, coloured by status, as wide as its
text, and the words a branch's verdict reads as."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratuslab.verify import badge
from stratuslab.verify.values import Verdict

NS = {"svg": "http://www.w3.org/2000/svg"}


def parsed(label: str, status: str) -> ET.Element:
    return ET.fromstring(badge.svg(label, status))


def status_fill(root: ET.Element) -> str:
    rects = root.findall("svg:g/svg:rect", NS)
    return rects[1].attrib["fill"]  # label, status, gloss


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.findall("svg:g/svg:text", NS)]


def test_a_badge_is_well_formed_svg_that_says_label_and_status() -> None:
    root = parsed("webapp main", "passing")
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.attrib["height"] == "20" and root.attrib["role"] == "img"
    assert root.attrib["aria-label"] == "webapp main: passing"
    assert root.findtext("svg:title", namespaces=NS) == "webapp main: passing"
    assert texts(root) == ["webapp main", "webapp main", "passing", "passing"]  # shadow, text


@pytest.mark.parametrize(
    ("status", "fill"),
    [
        ("passing", "#4c1"),
        ("failing", "#e05d44"),
        ("invalid", "#e05d44"),
        ("error", "#fe7d37"),
        ("cancelled", "#9f9f9f"),
        ("pending", "#9f9f9f"),
        ("unknown", "#9f9f9f"),
        ("anything else", "#9f9f9f"),
    ],
)
def test_the_status_side_has_the_status_colour_and_the_label_side_is_grey(
    status: str, fill: str
) -> None:
    root = parsed("build", status)
    assert status_fill(root) == fill
    assert root.findall("svg:g/svg:rect", NS)[0].attrib["fill"] == "#555"


def test_the_sides_add_up_and_each_is_as_wide_as_its_text() -> None:
    root = parsed("build", "passing")
    label, status, gloss = root.findall("svg:g/svg:rect", NS)
    total = int(root.attrib["width"])
    assert int(label.attrib["width"]) + int(status.attrib["width"]) == total
    assert int(status.attrib["x"]) == int(label.attrib["width"])
    assert gloss.attrib["width"] == str(total)
    # Each text is centred on its side.
    centres = [float(t.attrib["x"]) for t in root.findall("svg:g/svg:text", NS)]
    assert centres[0] == int(label.attrib["width"]) / 2
    assert centres[2] == int(label.attrib["width"]) + int(status.attrib["width"]) / 2


def test_the_width_grows_with_the_text_and_with_wider_letters() -> None:
    def total(label: str) -> int:
        return int(parsed(label, "passing").attrib["width"])

    assert total("web") < total("webapp") < total("webapp main")
    assert total("iiiiii") < total("aaaaaa") < total("WWWWWW")
    assert total("日本語") > total("abc")  # wide East Asian letters
    # A shields.io badge "build | passing" is 88 px wide; ours is within a few pixels.
    assert abs(total("build") - 88) <= 6


def test_text_is_escaped_so_it_cannot_become_markup() -> None:
    raw = badge.svg('<script>&"x', "passing")
    assert "<script>" not in raw
    root = ET.fromstring(raw)
    assert texts(root)[1] == '<script>&"x'
    assert root.attrib["aria-label"] == '<script>&"x: passing'


def test_control_characters_go_since_xml_cannot_hold_them() -> None:
    root = parsed("web\x00app\x1b[31m", "pass\x08ing\ud800")
    assert texts(root)[1] == "webapp[31m"
    assert texts(root)[3] == "passing" and status_fill(root) == "#4c1"


def test_a_badge_is_one_line() -> None:
    assert texts(parsed("web\r\napp \t  main", "ok"))[1] == "web app main"


def test_texts_are_cut_at_forty_characters_with_an_ellipsis() -> None:
    root = parsed("x" * 100, "y" * 41)
    label, status = texts(root)[1], texts(root)[3]
    assert len(label) == 40 and label == "x" * 39 + "\u2026"
    assert len(status) == 40 and status.endswith("\u2026")
    assert len(texts(parsed("x" * 40, "ok"))[1]) == 40  # forty is kept whole
    assert int(parsed("x" * 100, "y").attrib["width"]) == int(
        parsed("x" * 1000, "y").attrib["width"]
    )


@pytest.mark.parametrize(
    ("verdict", "running", "word"),
    [
        (Verdict.PASSED, False, "passing"),
        (Verdict.FAILED, False, "failing"),
        (Verdict.ERROR, False, "error"),
        (Verdict.INVALID, False, "invalid"),
        (Verdict.CANCELLED, False, "cancelled"),
        ("passed", True, "passing"),  # the last verdict stands while a newer commit runs
        ("failed", True, "failing"),
        (None, True, "pending"),
        (None, False, "unknown"),
        ("no-such-verdict", False, "unknown"),
    ],
)
def test_a_verdict_reads_as_a_badges_word(verdict: str | None, running: bool, word: str) -> None:
    assert badge.status_of(verdict, running) == word


def test_every_verdict_has_a_word_and_every_word_a_colour() -> None:
    assert set(badge.WORDS) == set(Verdict)
    assert {badge.status_of(v, False) for v in Verdict} <= set(badge.COLOURS)


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(st.text(max_size=60), st.text(max_size=60))
def test_any_text_makes_a_well_formed_badge(label: str, status: str) -> None:
    root = parsed(label, status)
    shown = texts(root)
    for given_text, text in ((label, shown[1]), (status, shown[3])):
        assert text == badge.bounded(" ".join(badge.clean(given_text).split()), badge.MAX_TEXT)
        assert len(text) <= badge.MAX_TEXT and "\n" not in text
    assert int(root.attrib["width"]) >= 2 * 2 * badge.PADDING
