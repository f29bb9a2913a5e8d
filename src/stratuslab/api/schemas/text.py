"""Text as the store keeps it.

PostgreSQL refuses a NUL character in text (SQLite takes it), and no name, key, tag or value
of ours holds one: a string field of a request body is :data:`Text`, which refuses NUL before
anything is looked up or stored, with a message that says so.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text holds no NUL character, and this one does")
    return value


Text = Annotated[str, AfterValidator(no_nul)]
