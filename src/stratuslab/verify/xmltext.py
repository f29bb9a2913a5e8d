"""Text that any XML 1.0 document can hold: what the badge and the feeds put in their
elements and attributes.

Escaping (``<``, ``&``, quotes) is the serializer's job; this removes what no escaping can
carry. XML 1.0 forbids the C0 controls but tab, newline and carriage return, lone surrogates,
U+FFFE and U+FFFF, even as character references, so a commit subject holding one would make
the whole document ill-formed. DEL and the C1 controls are allowed but discouraged: they go
too, since no reader shows them.
"""

from __future__ import annotations

import re

# Everything outside XML 1.0's Char production, plus DEL and C1 (U+007F-U+009F).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

ELLIPSIS = "\u2026"


def clean(text: str) -> str:
    """``text`` without the characters an XML 1.0 document cannot hold."""
    return _NOT_XML.sub("", text)


def bounded(text: str, limit: int) -> str:
    """``text`` cleaned and cut to at most ``limit`` characters, an ellipsis marking the cut."""
    text = clean(text)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS
