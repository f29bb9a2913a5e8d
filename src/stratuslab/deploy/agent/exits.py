"""The tools' exit codes (SlipStream's) and the error that carries one.

Every failure the agent knows how to explain is a :class:`ToolError`: a tool prints its message
on one line of stderr and exits with its code; the agent loop logs it.
"""

from __future__ import annotations

OK, NOT_SET, USAGE, INVALID, UNREACHABLE, SERVER_FAILED, UNAUTHORISED, CLIENT_ERROR = range(8)
ABORTED, TIMED_OUT = 8, 9


class ToolError(Exception):
    """A failure, with the exit code the tools give it and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
