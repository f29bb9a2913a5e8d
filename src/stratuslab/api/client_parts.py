"""What each part of the API client (``client_accounts.py``, ``client_clouds.py``,
``client_images.py``, ``client_marketplace.py``, ``client_volumes.py``) uses of
:class:`~stratuslab.api.client.ApiClient`, which inherits every part and defines these: said
once, for the type checker only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratuslab.api.transport import Response


class ClientPart:
    if TYPE_CHECKING:
        base_url: str

        def request(
            self,
            method: str,
            path: str,
            *,
            json_body: Any = None,
            params: Mapping[str, Any] | None = None,
            timeout: float | None = None,
        ) -> Any: ...

        def _send(
            self,
            method: str,
            path: str,
            *,
            json_body: Any = None,
            params: Mapping[str, Any] | None = None,
            timeout: float | None = None,
            accept: str | None = None,
            content: tuple[str, bytes] | None = None,
        ) -> Response: ...

        def lines(
            self,
            path: str,
            *,
            params: Mapping[str, Any] | None = None,
            timeout: float,
            method: str = "GET",
            json_body: Any = None,
        ) -> Iterator[dict[str, Any]]: ...

        @staticmethod
        def _raise_for_error(status: int, data: bytes) -> None: ...
