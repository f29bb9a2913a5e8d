"""One error root for the whole project.

Every error a user can meet is a :class:`StratusError`. The CLI prints its message on one line
and exits with its ``exit_code``; the API maps it to a JSON body and an HTTP status. Anything
else that escapes is a bug and is reported as such.

::

    StratusError                      exit 1   (generic)
    ├── Invalid                       exit 65  bad input: malformed file, unknown parameter
    │   └── TooLarge                  exit 65  over a bound the server sets (413)
    ├── NotFound                      exit 66  no such image, instance, run, module
    │   └── NotYetSet                 exit 66  a runtime parameter exists but has no value (412)
    ├── Conflict                      exit 67  the request clashes with the current state
    │   ├── CapacityExceeded          exit 68  not enough CPU, memory, disk or quota
    │   └── RunAborted                exit 67  the run's abort flag is raised (409, the reason)
    ├── NotSupported                  exit 71  the backend lacks the capability asked for
    ├── Unauthorized                  exit 77  no or wrong credentials (401)
    │   └── RateLimited               exit 77  too many failed logins: wait, then retry (429)
    ├── Forbidden                     exit 77  known caller, not allowed to do this (403)
    │   └── Untrusted                 exit 77  the site's policy refuses the image (403)
    └── BackendError                  exit 70  a backend (LXD, a command) failed
        ├── BackendUnavailable        exit 69  the backend is not running or not reachable
        └── CommandFailed             exit 70  a subprocess exited non-zero

Exit codes 1 and 2 are reserved for the outcome of ``stratus deploy`` (run aborted, run timed
out) and 64 for command-line usage errors, so a CI job can tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence


class StratusError(Exception):
    """Root of every error the project raises on purpose."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class Invalid(StratusError):
    """The user's input is wrong: a malformed file, a bad value, an unknown key."""

    exit_code = 65
    http_status = 422


class TooLarge(Invalid):
    """The input is over a bound the server sets (a report, a log batch, a module)."""

    http_status = 413


class NotFound(StratusError):
    """The thing asked for does not exist."""

    exit_code = 66
    http_status = 404


class NotYetSet(NotFound):
    """A runtime parameter exists but nobody has set it yet."""

    http_status = 412


class Conflict(StratusError):
    """The request cannot be honoured in the current state of things."""

    exit_code = 67
    http_status = 409


class RunAborted(Conflict):
    """The run's abort flag is raised: every get and set fails fast with the first reason."""


class CapacityExceeded(Conflict):
    """Not enough free CPU, memory, disk or quota for the request."""

    exit_code = 68


class NotSupported(StratusError):
    """The backend does not offer the capability asked for."""

    exit_code = 71
    http_status = 501


class Unauthorized(StratusError):
    """The caller did not prove who it is, or may not do this."""

    exit_code = 77
    http_status = 401


class RateLimited(Unauthorized):
    """Too many failed logins for one account in a short time: the next try must wait."""

    http_status = 429


class Forbidden(StratusError):
    """The caller is known but may not do this (a node writing what the server owns)."""

    exit_code = 77
    http_status = 403


class Untrusted(Forbidden):
    """The site's trust policy refuses to start an image; the message names the rule."""


class BackendError(StratusError):
    """A backend (LXD, a public cloud, a system command) failed."""

    exit_code = 70
    http_status = 502


class BackendUnavailable(BackendError):
    """The backend is not running or cannot be reached."""

    exit_code = 69
    http_status = 503


class CommandFailed(BackendError):
    """A subprocess exited non-zero; carries what is needed to explain why."""

    def __init__(
        self,
        command: Sequence[str],
        returncode: int,
        stdout: str,
        stderr: str,
        *,
        hint: str | None = None,
    ) -> None:
        last = (stderr.strip() or stdout.strip()).splitlines()[-1:] or ["no output"]
        super().__init__(
            f"`{' '.join(command)}` exited with {returncode}: {last[0]}",
            hint=hint,
        )
        self.command = list(command)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


EXIT_RUN_ABORTED = 1
EXIT_RUN_TIMEOUT = 2
EXIT_USAGE = 64
EXIT_INTERNAL = 74


def by_name(name: str) -> type[StratusError]:
    """The error class called ``name`` (as the API reports it); the root for unknown names."""
    found = {cls.__name__: cls for cls in _subclasses(StratusError)}.get(name)
    return found or StratusError


def _subclasses(cls: type[StratusError]) -> list[type[StratusError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out
