"""Fixtures of the CLI's tests beyond the shared ones."""

from __future__ import annotations

from tests.verify.conftest import git_server  # noqa: F401  (a real git server, for watches)
