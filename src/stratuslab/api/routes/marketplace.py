"""StratusLab's Marketplace REST resource: ``/metadata``, ``/endorsers``, ``/tag``.

Reads need no credentials, so that a Marketplace serves other sites too; an upload needs a
user (any user: the entry's signature says who endorses it, the user only who uploaded it).
Answers are XML unless ``Accept: application/json`` or ``?media=json`` asks for JSON: one entry
is its signed XML byte for byte (anyone can verify it again), a list is StratusLab's
``<metadata>`` root holding each entry's ``rdf:RDF``.
"""

from __future__ import annotations

import email.parser
import email.policy
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stratuslab.api.deps import ServicesDep, UserDep
from stratuslab.api.limits import read_body
from stratuslab.cloud.marketplace.queries import MAX_EMAIL, MAX_LIMIT, MAX_OFFSET, MAX_QUERY
from stratuslab.cloud.marketplace.stored import Stored, listing_xml
from stratuslab.cloud.marketplace.xmlsafe import MAX_XML
from stratuslab.errors import Invalid

router = APIRouter(tags=["marketplace"])

XML = "application/xml"
Identifier = Annotated[str, Path(max_length=64, description="the image's 27-character id")]
Email = Annotated[str, Path(max_length=MAX_EMAIL, description="the endorser's e-mail")]
Created = Annotated[str, Path(max_length=40, description="when endorsed: 2026-05-01T12:00:00Z")]
Media = Annotated[str | None, Query(pattern="^(xml|json)$", description="xml (default) or json")]
Text = Annotated[str | None, Query(max_length=MAX_QUERY)]
Flag = Annotated[bool, Query()]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "XML, or JSON when asked", "content": {XML: {}, "application/json": {}}}
}
_UPLOAD_TYPES = ("application/xml", "application/rdf+xml", "text/xml", "multipart/form-data")


@router.get("/metadata", response_class=Response, responses=_ANSWERS)
def list_entries(
    request: Request,
    services: ServicesDep,
    q: Text = None,
    os: Text = None,
    email: Text = None,
    tag: Text = None,
    deprecated: Flag = False,
    expired: Flag = False,
    limit: Limit = 100,
    offset: Offset = 0,
    media: Media = None,
) -> Response:
    """Each endorser's latest entry of each image, newest first; ``q`` searches titles,
    descriptions, os, creators and tags; deprecated and expired entries only when asked."""
    json = wants_json(request, media)
    found = services.marketplace.search(
        text=q,
        os=os,
        email=email,
        tag=tag,
        include_deprecated=deprecated,
        include_expired=expired,
        with_xml=not json,
        limit=limit,
        offset=offset,
    )
    return listing(found, json)


@router.post(
    "/metadata",
    status_code=status.HTTP_201_CREATED,
    response_class=Response,
    responses={201: _ANSWERS[200]},
    openapi_extra={
        "requestBody": {
            "description": "the signed entry (or a form with it, as StratusLab's client sent)",
            "content": {kind: {} for kind in _UPLOAD_TYPES},
        }
    },
)
async def upload(request: Request, services: ServicesDep, user: UserDep) -> Response:
    """Upload a signed entry. It is verified and kept as it came; an entry not newer than the
    latest of the image by its endorser is refused (409)."""
    body = await read_body(request, MAX_XML)
    xml = signed_document(request.headers.get("content-type", ""), body)
    stored = await run_in_threadpool(lambda: services.marketplace.upload(principal=user, xml=xml))
    answer = one(stored, wants_json(request, request.query_params.get("media")))
    answer.status_code = status.HTTP_201_CREATED
    answer.headers["Location"] = stored.href
    return answer


@router.get("/metadata/{identifier}", response_class=Response, responses=_ANSWERS)
def image_entries(
    identifier: Identifier,
    request: Request,
    services: ServicesDep,
    history: Flag = False,
    limit: Limit = MAX_LIMIT,
    offset: Offset = 0,
    media: Media = None,
) -> Response:
    """Every endorser's latest entry of the image (with ``history``, every entry kept)."""
    json = wants_json(request, media)
    found = services.marketplace.entries(
        identifier, history=history, with_xml=not json, limit=limit, offset=offset
    )
    return listing(found, json)


@router.get("/metadata/{identifier}/{email}", response_class=Response, responses=_ANSWERS)
def latest_entry(
    identifier: Identifier,
    email: Email,
    request: Request,
    services: ServicesDep,
    media: Media = None,
) -> Response:
    """The endorser's latest entry of the image."""
    return one(services.marketplace.latest(identifier, email), wants_json(request, media))


@router.get("/metadata/{identifier}/{email}/{created}", response_class=Response, responses=_ANSWERS)
def one_entry(
    identifier: Identifier,
    email: Email,
    created: Created,
    request: Request,
    services: ServicesDep,
    media: Media = None,
) -> Response:
    """One upload: the entry the endorser signed at that time."""
    stored = services.marketplace.entry(identifier, email, created)
    return one(stored, wants_json(request, media))


@router.get("/endorsers", response_class=Response, responses=_ANSWERS)
def endorsers(
    request: Request,
    services: ServicesDep,
    limit: Limit = 100,
    offset: Offset = 0,
    media: Media = None,
) -> Response:
    """Everyone who endorsed entries here."""
    found = [e.to_json() for e in services.marketplace.endorsers(limit=limit, offset=offset)]
    if wants_json(request, media):
        return JSONResponse(found)
    return Response(_endorsers_xml(found), media_type=XML)


@router.get("/endorsers/{email}", response_class=Response, responses=_ANSWERS)
def endorser(
    email: Email,
    request: Request,
    services: ServicesDep,
    limit: Limit = 100,
    offset: Offset = 0,
    media: Media = None,
) -> Response:
    """One endorser, and their latest entry of each image (deprecated and expired too)."""
    json = wants_json(request, media)
    summary = services.marketplace.endorser(email)
    found = services.marketplace.search(
        email=email,
        include_deprecated=True,
        include_expired=True,
        with_xml=not json,
        limit=limit,
        offset=offset,
    )
    if json:
        return JSONResponse({**summary.to_json(), "entries": [s.to_json() for s in found]})
    return listing(found, json)


@router.get("/tag/{email}/{tag}", response_class=Response, responses=_ANSWERS)
def tagged(
    email: Email,
    tag: Annotated[str, Path(max_length=MAX_QUERY)],
    request: Request,
    services: ServicesDep,
    media: Media = None,
) -> Response:
    """The latest entry the endorser tagged so."""
    return one(services.marketplace.tagged(email, tag), wants_json(request, media))


# -- helpers --------------------------------------------------------------------------------


def wants_json(request: Request, media: str | None) -> bool:
    """``?media=`` first, then the Accept header; XML when neither asks for JSON."""
    if media is not None:
        if media not in ("xml", "json"):
            raise Invalid(f"media: xml or json, not {media[:20]!r}")
        return media == "json"
    accept = request.headers.get("accept", "").lower()
    json_at, xml_at = accept.find("application/json"), accept.find("xml")
    return json_at >= 0 and (xml_at < 0 or json_at < xml_at)


def one(stored: Stored, json: bool) -> Response:
    if json:
        return JSONResponse(stored.to_json())
    assert stored.xml is not None
    return Response(stored.xml, media_type=XML)


def listing(found: list[Stored], json: bool) -> Response:
    if json:
        return JSONResponse([s.to_json() for s in found])
    return Response(listing_xml(found), media_type=XML)


def signed_document(content_type: str, body: bytes) -> bytes:
    """The entry in an upload's body: the body itself, or the form's one field (or its field
    ``metadata``) when StratusLab's client sent a multipart form."""
    if not content_type.lower().startswith("multipart/"):
        return body
    head = f"Content-Type: {content_type[:400]}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    parts = [p for p in message.iter_parts()] if message.is_multipart() else []
    fields = {str(p.get_param("name", header="content-disposition") or ""): p for p in parts}
    chosen = fields.get("metadata") or (parts[0] if len(parts) == 1 else None)
    if chosen is None:
        named = ", ".join(repr(n[:40]) for n in fields) or "none"
        raise Invalid(
            f"a multipart upload holds one field, or a field 'metadata', with the signed entry"
            f" (fields here: {named})"
        )
    payload = chosen.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise Invalid("the form's field holds no entry")
    return payload


def _endorsers_xml(found: list[dict[str, Any]]) -> bytes:
    from lxml import etree

    root = etree.Element("endorsers")
    for summary in found:
        node = etree.SubElement(root, "endorser")
        for key, value in summary.items():
            etree.SubElement(node, key).text = str(value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
