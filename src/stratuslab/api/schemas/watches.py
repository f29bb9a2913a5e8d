"""Bodies of the /api/watches resource."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from stratuslab.api.schemas.text import Text, no_nul
from stratuslab.verify import watches

# An optional field's bound goes on the string, before the NUL check, or pydantic words it as
# a count of "items".
Name = Annotated[str, Field(max_length=64), AfterValidator(no_nul)]
Branch = Annotated[str, Field(max_length=255), AfterValidator(no_nul)]
Key = Annotated[str, Field(max_length=16384), AfterValidator(no_nul)]


class WatchCreate(BaseModel):
    """A repository to verify: every new commit of its branches is deployed and tested."""

    model_config = ConfigDict(extra="forbid")

    repository: Text = Field(max_length=2048, description="any URL git fetches")
    module: Text = Field(max_length=255, description="the application's path in the repository")
    branches: list[Text] = Field(default_factory=lambda: ["main"], max_length=watches.MAX_BRANCHES)
    every_s: int = Field(default=watches.DEFAULT_EVERY_S, ge=1, le=watches.MAX_EVERY_S)
    params: dict[Text, Text] = Field(default_factory=dict, max_length=watches.MAX_PARAMS)
    notify: list[Text] = Field(default_factory=list, max_length=watches.MAX_NOTIFY)
    name: Name | None = None
    keep_running: Text = Field(default="never", max_length=16)
    mail_every_failure: bool = False
    forge: dict[Text, Text] | None = Field(
        default=None,
        max_length=8,
        description='commit statuses: {"kind": "github"|"gitlab"|"gitea", "api", "repo", "token"}',
    )
    deploy_key: Key | None = Field(default=None, description="an ssh private key")

    def spec(self) -> watches.WatchSpec:
        forge: dict[str, Any] | None = dict(self.forge) if self.forge else None
        return watches.WatchSpec(
            repository=self.repository,
            module=self.module,
            branches=self.branches,
            every_s=self.every_s,
            params=self.params,
            notify=self.notify,
            name=self.name,
            keep_running=self.keep_running,
            mail_every_failure=self.mail_every_failure,
            forge=forge,
            deploy_key=self.deploy_key,
        )


class WatchRun(BaseModel):
    """Verify one commit now."""

    model_config = ConfigDict(extra="forbid")

    commit: Name | None = Field(default=None, description="a sha, or a branch")
    branch: Branch | None = None
