"""The Marketplace resources of the API client: entries (``/metadata``), endorsers, and the
checksums of an image on a cloud (what an entry of it states).

A part of :class:`~stratuslab.api.client.ApiClient` (which inherits it), kept apart so that
each module stays small. Entries come back as JSON (the client asks for it); their signed XML
with :meth:`marketplace_xml`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from stratuslab.api.client_parts import ClientPart


class MarketplaceResources(ClientPart):
    def marketplace_upload(self, xml: bytes) -> dict[str, Any]:
        """Upload a signed entry; the entry as the Marketplace keeps it (with its ``href``)."""
        response = self._send("POST", "/metadata", content=("application/xml", xml))
        data = response.read()
        self._raise_for_error(response.status, data)
        result: dict[str, Any] = json.loads(data)
        return result

    def marketplace_search(
        self,
        *,
        text: str | None = None,
        os: str | None = None,
        email: str | None = None,
        tag: str | None = None,
        include_all: bool = False,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Each endorser's latest entry of each image that matches; deprecated and expired
        ones too with ``include_all``."""
        params = {"q": text, "os": os, "email": email, "tag": tag, "limit": limit}
        if include_all:
            params.update(deprecated="true", expired="true")
        result: list[dict[str, Any]] = self.request("GET", "/metadata", params=params)
        return result

    def marketplace_entries(self, identifier: str, *, email: str | None = None) -> list[Any]:
        """Every endorser's latest entry of the image, or ``email``'s alone."""
        if email is None:
            found: list[Any] = self.request("GET", f"/metadata/{_seg(identifier)}")
            return found
        return [self.request("GET", f"/metadata/{_seg(identifier)}/{_seg(email)}")]

    def marketplace_xml(self, identifier: str, *, email: str | None = None) -> bytes:
        """The signed XML of ``email``'s latest entry of the image, as uploaded; without
        ``email``, StratusLab's ``<metadata>`` list of every endorser's latest."""
        path = f"/metadata/{_seg(identifier)}" + (f"/{_seg(email)}" if email else "")
        response = self._send("GET", path, params={"media": "xml"})
        data = response.read()
        self._raise_for_error(response.status, data)
        return data

    def marketplace_endorsers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/endorsers")
        return result

    def image_checksums(self, name: str, cloud: str = "local") -> dict[str, Any]:
        """The size, digests and Marketplace identifier of an image on ``cloud`` (the server
        reads its bytes the first time: this may take a while for a large image)."""
        result: dict[str, Any] = self.request(
            "GET", f"/api/images/{_seg(name)}/checksums", params={"cloud": cloud}, timeout=900
        )
        return result


def _seg(value: str) -> str:
    return quote(value, safe="@")
