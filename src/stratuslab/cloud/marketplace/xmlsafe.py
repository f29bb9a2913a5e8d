"""Reading untrusted XML safely, and the namespaces of StratusLab's Marketplace entries.

Entries come from other sites and other users: a document is refused, with :class:`Invalid`,
when it is over ``MAX_XML`` bytes, declares a DTD (the only place entities can be declared, so
no entity is ever expanded or fetched), or nests deeper than ``MAX_DEPTH``. Nothing is fetched
from the network while parsing.
"""

from __future__ import annotations

from lxml import etree

from stratuslab.errors import Invalid, TooLarge

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DCTERMS = "http://purl.org/dc/terms/"
SLREQ = "http://mp.stratuslab.eu/slreq#"
SLTERMS = "http://mp.stratuslab.eu/slterms#"
XML_NS = "http://www.w3.org/XML/1998/namespace"
DS = "http://www.w3.org/2000/09/xmldsig#"
BASE = "http://mp.stratuslab.eu/"
NSMAP = {"rdf": RDF, "dcterms": DCTERMS, "slreq": SLREQ, "slterms": SLTERMS}
PREFIX = {v: k for k, v in NSMAP.items()}
MAX_XML = 1 << 20
MAX_DEPTH = 16


def parse(data: bytes) -> etree._Element:
    """Parse an entry's XML safely: bounded size and depth, no DTD, no entities, no network."""
    if len(data) > MAX_XML:
        raise TooLarge(f"a metadata entry is at most {MAX_XML} bytes, not {len(data)}")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_pis=True
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise Invalid(f"the entry is not well-formed XML: {e}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise Invalid("the entry declares a DTD (<!DOCTYPE>): entries may not declare entities")
    check_depth(root)
    return root


def check_depth(root: etree._Element) -> None:
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Invalid(f"{element_name(element)}: nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in element)


def element_name(element: etree._Element) -> str:
    """``prefix:local`` of an element, for error messages."""
    if not isinstance(element.tag, str):
        return "a comment or processing instruction"
    q = etree.QName(element)
    prefix = PREFIX.get(q.namespace or "", q.namespace or "")
    return f"{prefix}:{q.localname}" if prefix else q.localname
