"""Distinguished names as grid tools print them, and as people write them.

DNs are written in the grid's slash form, ``/DC=org/DC=example/O=Grid/CN=Alice Smith``, in the
certificate's own order. People may also write RFC 4514's form (``CN=Alice Smith,O=Grid,
DC=example,DC=org``, most significant component last); :func:`normalized` turns either into
the slash form, so that two DNs are the same person when their normalized forms are equal.
Used by the accounts' certificate logins and by the site's image policy (endorsers), which
must agree on who a DN is. Standard library only: the settings validate DNs with it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from stratuslab.errors import Invalid

if TYPE_CHECKING:
    from cryptography import x509

MAX_DN = 512
# Attribute names people write (any case) -> the name the slash form uses, and their OIDs.
_SHORT_OF = {
    "C": "C",
    "ST": "ST",
    "L": "L",
    "O": "O",
    "OU": "OU",
    "CN": "CN",
    "DC": "DC",
    "EMAILADDRESS": "emailAddress",
    "UID": "UID",
}
_OID_SHORT = {
    "2.5.4.6": "C",
    "2.5.4.8": "ST",
    "2.5.4.7": "L",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.3": "CN",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.1": "UID",
}
_COMPONENT = re.compile(r"^([A-Za-z][A-Za-z0-9]*)=(.+)$")


def dn_of(name: x509.Name) -> str:
    """``name`` in the grid's slash form, in the certificate's order."""
    parts = []
    for rdn in name.rdns:
        for attribute in rdn:
            dotted = attribute.oid.dotted_string
            key = _OID_SHORT.get(dotted, dotted)
            value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
            parts.append(f"{key}={value}")
    return "/" + "/".join(parts)


def normalized(text: str) -> str:
    """A DN as the user wrote it (slash form, or RFC 4514) in the slash form; Invalid when it
    is not a DN."""
    text = text.strip()
    if not text or len(text) > MAX_DN:
        raise Invalid(f"a certificate DN has 1 to {MAX_DN} characters")
    if text.startswith("/"):
        components = [c for c in re.split(r"(?<!\\)/", text[1:])]
    else:  # RFC 4514 lists the most significant component last
        components = list(reversed([c.strip() for c in re.split(r"(?<!\\),", text)]))
    out = []
    for component in components:
        found = _COMPONENT.match(component.strip())
        if found is None:
            raise Invalid(f"{text[:80]!r} is not a DN: {component[:40]!r} is not NAME=value")
        key, value = found.group(1), found.group(2).strip()
        short = _SHORT_OF.get(key.upper())
        if short is None:
            raise Invalid(f"{text[:80]!r}: unknown DN attribute {key[:20]!r}")
        out.append(f"{short}={value}")
    return "/" + "/".join(out)
