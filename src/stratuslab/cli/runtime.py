"""What a CLI invocation needs, built on first use so that `stratus --help` stays fast."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from stratuslab.cloud.instances import InstanceService
    from stratuslab.config import Settings


class Runtime:
    def __init__(self, *, debug: bool = False) -> None:
        self.debug = debug

    @cached_property
    def settings(self) -> Settings:
        from stratuslab import config

        return config.load()

    @cached_property
    def engine(self) -> Engine:
        from stratuslab.db.session import engine_for

        return engine_for(self.settings.database_url)

    @cached_property
    def instances(self) -> InstanceService:
        from stratuslab.cloud.instances import InstanceService

        return InstanceService(self.engine, owner=self.settings.user, name_prefix=self.settings.instance_prefix)

    def close(self) -> None:
        if "instances" in self.__dict__:
            self.instances.close()


def runtime(ctx: typer.Context) -> Runtime:
    """The invocation's runtime, made by the root command."""
    found = ctx.find_object(Runtime)
    if found is None:
        found = ctx.ensure_object(Runtime)
    return found
