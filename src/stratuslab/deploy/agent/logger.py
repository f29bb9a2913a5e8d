"""The agent's logger, ``log``, made (and ``logging`` imported) on first use.

The tools log nothing on their happy path, and importing ``logging`` costs every ss-get and
ss-set a few milliseconds; the retry loop of the client and the agent loop use it freely.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy knows the name
if TYPE_CHECKING:
    import logging
    from typing import Any


class _Log:
    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("stratus-agent"), name)


log: logging.Logger = _Log()  # type: ignore[assignment]
