"""`stratus watch`: repositories the server verifies after every commit.

A watch polls its repository every ``--every`` seconds (and at once when the forge's push hook
or ``stratus watch notify`` says so), deploys each new commit of its branches from pristine
instances, records the verdict, bisects a break back to the commit that made it, and tells the
``--notify`` targets.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

import click

from stratuslab.cli.deploy import KEEP
from stratuslab.cli.output import age, emit_json, err, out, output_option, table
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import Invalid


@click.group(name="watch", no_args_is_help=True)
def group() -> None:
    """Verify every commit of a repository: add, list, show, run, history, pause, remove."""


def _path(name: str, tail: str = "") -> tuple[str, dict[str, Any]]:
    """The resource of watch NAME (or OWNER/NAME, for administrators)."""
    owner, slash, plain = name.rpartition("/")
    params = {"owner": owner} if slash else {}
    return f"/api/watches/{quote(plain, safe='')}{tail}", params


def _params(given: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in given:
        key, equals, value = item.partition("=")
        if not equals or ":" not in key:
            raise Invalid(f"--param {item[:80]!r}: write NODE:NAME=VALUE (or ss:NAME=VALUE)")
        found[key] = value
    return found


@group.command("add")
@click.argument("repository")
@click.option("--module", required=True, help="the application's path in the repository")
@click.option("--branch", "branches", multiple=True, help="a branch to verify (main by default)")
@click.option(
    "--every",
    "every_s",
    type=int,
    default=300,
    show_default=True,
    metavar="SECONDS",
    help="poll this often (a push hook or `watch notify` wakes it at once)",
)
@click.option(
    "--param", "params", multiple=True, metavar="NODE:NAME=VALUE", help="given to every run"
)
@click.option(
    "--notify",
    "targets",
    multiple=True,
    metavar="mailto:ADDR|URL",
    help="mail this address, or post a signed JSON document per verdict to this URL",
)
@click.option("--name", default=None, help="the watch's name (from the repository by default)")
@click.option("--keep-running", type=click.Choice(KEEP), default="never", show_default=True)
@click.option("--mail-every-failure", is_flag=True, help="mail on every failure, not on changes")
@click.option(
    "--deploy-key",
    "deploy_key",
    type=click.File("r"),
    help="an ssh private key file, for an ssh:// repository",
)
@click.option(
    "--forge",
    type=click.Choice(("github", "gitlab", "gitea")),
    help="post commit statuses to this forge (Forgejo is gitea)",
)
@click.option("--forge-api", metavar="URL", help="its API (https://api.github.com, .../api/v4)")
@click.option(
    "--forge-repo", metavar="OWNER/NAME", help="the repository there (GitLab: id or path)"
)
@click.option(
    "--forge-token-stdin", is_flag=True, help="read the forge's token from standard input"
)
@output_option
@pass_runtime
def add(
    rt: Runtime,
    repository: str,
    module: str,
    branches: tuple[str, ...],
    every_s: int,
    params: tuple[str, ...],
    targets: tuple[str, ...],
    name: str | None,
    keep_running: str,
    mail_every_failure: bool,
    deploy_key: Any,
    forge: str | None,
    forge_api: str | None,
    forge_repo: str | None,
    forge_token_stdin: bool,
    output: str,
) -> None:
    """Watch REPOSITORY (any URL git fetches) and verify every new commit of its branches."""
    statuses = None
    if forge:
        if not (forge_api and forge_repo and forge_token_stdin):
            raise Invalid("--forge needs --forge-api, --forge-repo and --forge-token-stdin")
        token = sys.stdin.readline().strip()
        statuses = {"kind": forge, "api": forge_api, "repo": forge_repo, "token": token}
    body = {
        "repository": repository,
        "module": module,
        "branches": list(branches) or ["main"],
        "every_s": every_s,
        "params": _params(params),
        "notify": list(targets),
        "name": name,
        "keep_running": keep_running,
        "mail_every_failure": mail_every_failure,
        "deploy_key": deploy_key.read(16385) if deploy_key is not None else None,
        "forge": statuses,
    }
    watch = rt.client.request("POST", "/api/watches", json_body=body)
    if output == "json":
        emit_json(watch)
        return
    out.print(
        f"Watching {watch['repository']} as {watch['name']!r} "
        f"({', '.join(b['branch'] for b in watch['branches'])}, every {watch['every_s']} s).",
        markup=False,
        highlight=False,
    )
    err.print(
        f"Push hook (GitHub, GitLab, Gitea or Forgejo): {watch['hook_url']}\n"
        f"  secret {watch['secret']}\n"
        "The secret is shown only now: set it as the webhook's secret (GitLab: its secret token).",
        markup=False,
        highlight=False,
    )


@group.command("list")
@output_option
@pass_runtime
def list_watches(rt: Runtime, output: str) -> None:
    """Your watches, and where each branch stands."""
    watches = rt.client.request("GET", "/api/watches")
    if output == "json":
        emit_json(watches)
    elif not watches:
        err.print("No watches. Add one with `stratus watch add REPOSITORY --module PATH`.")
    else:
        table(
            None,
            ("NAME", "OWNER", "REPOSITORY", "BRANCH", "STATUS", "PAUSED"),
            (
                (w["name"], w["owner"], w["repository"], b["branch"], b["status"], w["paused"])
                for w in watches
                for b in w["branches"]
            ),
        )


@group.command("show")
@click.argument("name")
@output_option
@pass_runtime
def show(rt: Runtime, name: str, output: str) -> None:
    """One watch: its settings, and each branch's state ("passing since 8e01d44, 3 h")."""
    path, params = _path(name)
    watch = rt.client.request("GET", path, params=params)
    if output == "json":
        emit_json(watch)
        return
    lines = [
        f"watch {watch['owner']}/{watch['name']}{' (paused)' if watch['paused'] else ''}",
        f"  repository  {watch['repository']}",
        f"  module      {watch['module']}",
        f"  every       {watch['every_s']} s; last poll {_ago(watch['polled_at'])}",
        f"  notify      {', '.join(watch['notify']) or 'nobody'}",
        f"  push hook   {watch['hook_url']}",
    ]
    if watch["poll_error"]:
        lines.append(f"  last fetch failed: {watch['poll_error']}")
    for b in watch["branches"]:
        lines.append(f"  {b['branch']}: {b['status']}")
    out.print("\n".join(lines), markup=False, highlight=False)


def _ago(moment: str | None) -> str:
    return f"{age(moment)} ago" if moment else "never"


@group.command("history")
@click.argument("name")
@click.option("--branch", default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@output_option
@pass_runtime
def history(rt: Runtime, name: str, branch: str | None, limit: int, output: str) -> None:
    """Every verified commit: commit, author, message, verdict, duration, run."""
    path, params = _path(name, "/history")
    rows = rt.client.request("GET", path, params=params | {"branch": branch, "limit": limit})
    if output == "json":
        emit_json(rows)
        return
    table(
        None,
        ("COMMIT", "BRANCH", "AUTHOR", "MESSAGE", "VERDICT", "SECONDS", "RUN", "WHY"),
        (
            (
                r["commit"][:7],
                r["branch"],
                r["author"],
                r["subject"][:50],
                r["verdict"] or r["phase"],
                r["seconds"] if r["seconds"] is not None else "",
                (r["run_id"] or "")[:8],
                r["why"],
            )
            for r in rows
        ),
    )


@group.command("run")
@click.argument("name")
@click.option("--commit", default=None, help="a sha or branch (the branch's head by default)")
@click.option("--branch", default=None)
@output_option
@pass_runtime
def run_now(rt: Runtime, name: str, commit: str | None, branch: str | None, output: str) -> None:
    """Verify one commit now."""
    path, params = _path(name, "/run")
    queued = rt.client.request(
        "POST", path, params=params, json_body={"commit": commit, "branch": branch}
    )
    if output == "json":
        emit_json(queued)
    else:
        out.print(f"Queued {queued['commit'][:12]} of {queued['branch']}.", markup=False)


def _simple(verb: str, doc: str, method: str, tail: str) -> None:
    @group.command(verb, help=doc)
    @click.argument("name")
    @output_option
    @pass_runtime
    def command(rt: Runtime, name: str, output: str) -> None:
        path, params = _path(name, tail)
        answer = rt.client.request(method, path, params=params)
        if output == "json":
            emit_json(answer)
        else:
            out.print(f"{verb}: {answer['owner']}/{answer['name']}", markup=False)


_simple("pause", "Stop polling and verifying (what is queued waits).", "POST", "/pause")
_simple("resume", "Poll and verify again, at once.", "POST", "/resume")
_simple("notify", "Poll at once (call it from a post-receive hook).", "POST", "/notify")
_simple("remove", "Remove the watch and its history (a run under way is cancelled).", "DELETE", "")
