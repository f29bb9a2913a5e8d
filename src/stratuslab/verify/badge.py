"""A status badge per watch and branch: a flat SVG in shields.io's style, grey label on the
left, the status in its colour on the right, which a README shows as an image.

No font is at hand on the server, so each side's width comes from the text's length in
approximate Verdana 11 px widths by class of character (narrow, wide, capitals, digits, wide
East Asian), and ``textLength`` asks the viewer to fit the text to exactly that width, so a
misjudged width squeezes the text a little rather than overflowing. Every text is cleaned of
what XML cannot hold, put on one line, escaped by the serializer, and cut at 40 characters.
"""

from __future__ import annotations

import math
import unicodedata
from xml.etree import ElementTree as ET

from stratuslab.verify.values import Verdict
from stratuslab.verify.xmltext import bounded, clean

MAX_TEXT = 40
HEIGHT = 20
PADDING = 5  # on either side of each text
LABEL_COLOUR = "#555"
GREY = "#9f9f9f"
COLOURS = {
    "passing": "#4c1",
    "failing": "#e05d44",
    "invalid": "#e05d44",
    "error": "#fe7d37",
    "cancelled": GREY,
    "pending": GREY,
    "unknown": GREY,
}
WORDS = {
    Verdict.PASSED: "passing",
    Verdict.FAILED: "failing",
    Verdict.ERROR: "error",
    Verdict.INVALID: "invalid",
    Verdict.CANCELLED: "cancelled",
}
FONT = "Verdana,Geneva,DejaVu Sans,sans-serif"
SVG = "http://www.w3.org/2000/svg"

# Approximate advance widths of Verdana at 11 px, by class of character.
_CLASSES = (
    ("ijl'|", 3.1),
    ("frt.,:;!()[]{}-/", 4.4),
    (" ", 3.9),
    ("csz", 5.7),
    ("kvxy", 6.3),
    ("mw", 9.9),
    ("MW@%", 11.5),
)
_UPPER, _DIGIT, _LOWER, _OTHER, _WIDE = 7.7, 7.0, 6.8, 7.0, 11.0


def status_of(verdict: str | None, running: bool) -> str:
    """The badge's word for a branch's verdict (a :class:`Verdict` value, or ``None`` before
    any): the last verdict stands while a newer commit is verified, so ``running`` matters only
    before the first one ("pending"); an unknown value reads "unknown"."""
    if verdict is None:
        return "pending" if running else "unknown"
    try:
        return WORDS[Verdict(verdict)]
    except ValueError:
        return "unknown"


def svg(label: str, status: str) -> str:
    """The badge reading ``label`` and ``status``, coloured by ``status`` (grey if unknown)."""
    label, status = line(label), line(status)
    colour = COLOURS.get(status, GREY)
    left, right = _side(label), _side(status)
    total = left + right
    said = f"{label}: {status}"

    root = ET.Element(
        "svg",
        {
            "xmlns": SVG,
            "width": str(total),
            "height": str(HEIGHT),
            "role": "img",
            "aria-label": said,
        },
    )
    ET.SubElement(root, "title").text = said
    gradient = ET.SubElement(root, "linearGradient", {"id": "s", "x2": "0", "y2": "100%"})
    ET.SubElement(gradient, "stop", {"offset": "0", "stop-color": "#bbb", "stop-opacity": ".1"})
    ET.SubElement(gradient, "stop", {"offset": "1", "stop-opacity": ".1"})
    clip = ET.SubElement(root, "clipPath", {"id": "r"})
    ET.SubElement(
        clip, "rect", {"width": str(total), "height": str(HEIGHT), "rx": "3", "fill": "#fff"}
    )
    shapes = ET.SubElement(root, "g", {"clip-path": "url(#r)"})
    ET.SubElement(shapes, "rect", {"width": str(left), "height": str(HEIGHT), "fill": LABEL_COLOUR})
    ET.SubElement(
        shapes,
        "rect",
        {"x": str(left), "width": str(right), "height": str(HEIGHT), "fill": colour},
    )
    ET.SubElement(shapes, "rect", {"width": str(total), "height": str(HEIGHT), "fill": "url(#s)"})
    texts = ET.SubElement(
        root,
        "g",
        {"fill": "#fff", "text-anchor": "middle", "font-family": FONT, "font-size": "11"},
    )
    for text, middle in ((label, left / 2), (status, left + right / 2)):
        length = f"{width(text):.1f}"
        at = f"{middle:g}"
        shadow = {"x": at, "y": "15", "fill": "#010101", "fill-opacity": ".3"}
        shadow |= {"aria-hidden": "true", "textLength": length}
        ET.SubElement(texts, "text", shadow).text = text
        ET.SubElement(texts, "text", {"x": at, "y": "14", "textLength": length}).text = text
    return ET.tostring(root, encoding="unicode")


def line(text: str) -> str:
    """``text`` as a badge shows it: on one line, whitespace runs made one space, cut at 40."""
    return bounded(" ".join(clean(text).split()), MAX_TEXT)


def width(text: str) -> float:
    """The approximate width of ``text`` in Verdana at 11 px."""
    return sum(_char_width(char) for char in text)


def _side(text: str) -> int:
    return math.ceil(width(text)) + 2 * PADDING


def _char_width(char: str) -> float:
    for chars, advance in _CLASSES:
        if char in chars:
            return advance
    if "A" <= char <= "Z":
        return _UPPER
    if "0" <= char <= "9":
        return _DIGIT
    if "a" <= char <= "z":
        return _LOWER
    if unicodedata.combining(char):
        return 0.0
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return _WIDE
    return _OTHER
