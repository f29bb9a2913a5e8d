"""`stratus quota`: what users and groups may hold at once, beside what they hold now."""

from __future__ import annotations

from typing import Any

import click

from stratuslab.cli.output import emit_json, out, output_option, plain, table
from stratuslab.cli.runtime import Runtime, pass_runtime

LIMITS = (
    ("instances", "INSTANCES"),
    ("cpu", "VCPUS"),
    ("ram_mb", "MEMORY MIB"),
    ("storage_gib", "STORAGE GIB"),
)


class LimitType(click.ParamType):  # type: ignore[type-arg]
    """A limit: a number from 0, or ``none`` for no limit."""

    name = "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text in ("none", "unlimited", "-"):
            return "none"
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is not a whole number or 'none'", param, ctx)
        if number < 0:
            self.fail(f"{number} is below 0", param, ctx)
        return number


LIMIT = LimitType()


@click.group(name="quota", no_args_is_help=True)
def group() -> None:
    """Show quotas with what they add up now; set them (administrators)."""


@group.command("show")
@click.option("--user", "user", help="another user's (administrators); default: yours")
@click.option("--all", "all_quotas", is_flag=True, help="every quota recorded (administrators)")
@output_option
@pass_runtime
def show(rt: Runtime, user: str | None, all_quotas: bool, output: str) -> None:
    """The quotas that bind you (or USER), each as what is in use over its limit.

    A user is bound by their own quota (or the default, user:*) and by each of their groups'
    quotas on what all the group's members hold; a cloud's quota by what is held there, a
    `*` quota by what is held on every cloud. Storage is what volumes hold, in whole GiB.
    """
    if all_quotas and user:
        raise click.UsageError("--all or --user, not both")
    params = {"user": user, "all": all_quotas or None}
    shown: dict[str, Any] = rt.client.request("GET", "/api/quotas", params=params)
    if output == "json":
        emit_json(shown)
        return
    who = shown["user"]
    if not shown["quotas"]:
        out.print(plain(f"No quota binds {who}: no limits." if who else "No quotas are set."))
    else:
        title = f"quotas of {who}" if who else "every quota"
        table(
            title,
            ("SUBJECT", "CLOUD", *(label for _, label in LIMITS)),
            (_row(q) for q in shown["quotas"]),
        )
        if any(q["over"] for q in shown["quotas"]):
            out.print(plain("Over a limit: what runs keeps running; nothing new starts."))
    if who and shown["usage"]:
        held = shown["usage"]["*"]
        out.print(
            plain(
                f"{who} holds {held['instances']} instance(s), {held['cpu']} vCPU(s), "
                f"{held['ram_mb']} MiB, {held.get('storage_gib', 0)} GiB of volumes on all clouds"
            )
        )


@group.command("set")
@click.argument("name")
@click.option("--group", "is_group", is_flag=True, help="NAME is a group: its members together")
@click.option("--cloud", default="*", show_default=True, help="one cloud, or * for all together")
@click.option("--instances", type=LIMIT, help="instances at once (none: no limit)")
@click.option("--cpu", type=LIMIT, help="vCPUs")
@click.option("--ram", type=LIMIT, help="memory, MiB")
@click.option("--storage", type=LIMIT, help="volume storage, GiB")
@output_option
@pass_runtime
def set_quota(
    rt: Runtime,
    name: str,
    is_group: bool,
    cloud: str,
    instances: int | str | None,
    cpu: int | str | None,
    ram: int | str | None,
    storage: int | str | None,
    output: str,
) -> None:
    """Set NAME's quota (a user, `*` for every user without one, or with --group a group).

    Limits not given keep their value; `none` removes one; a quota left with no limit is
    removed. Lowering a quota below what is held keeps what runs and refuses new work.
    """
    subject = f"group:{name}" if is_group else f"user:{name}"
    given = {"instances": instances, "cpu": cpu, "ram_mb": ram, "storage_gib": storage}
    if all(value is None for value in given.values()):
        raise click.UsageError("give at least one of --instances, --cpu, --ram, --storage")
    current: dict[str, Any] = rt.client.request("GET", "/api/quotas", params={"all": True})
    limits: dict[str, Any] = next(
        (q["limits"] for q in current["quotas"] if (q["subject"], q["cloud"]) == (subject, cloud)),
        {},
    )
    body = {key: limits.get(key) for key in given}
    body.update({k: (None if v == "none" else v) for k, v in given.items() if v is not None})
    saved: dict[str, Any] = rt.client.request(
        "PUT", f"/api/quotas/{_segment(subject)}", json_body={"cloud": cloud, **body}
    )
    if output == "json":
        emit_json(saved)
        return
    set_limits = {k: v for k, v in saved["limits"].items() if v is not None}
    if not set_limits:
        out.print(plain(f"{subject} has no quota on {_scope(cloud)} now: no limits."))
        return
    shown = ", ".join(f"{k} {v}" for k, v in set_limits.items())
    out.print(plain(f"{subject} on {_scope(cloud)}: {shown}"))


def _row(quota: dict[str, Any]) -> list[Any]:
    from rich.text import Text

    limits, usage = quota["limits"], quota["usage"]
    cells: list[Any] = [quota["subject"], quota["cloud"]]
    for key, _ in LIMITS:
        limit = "-" if limits[key] is None else str(limits[key])
        used = "" if usage is None else f"{usage[key]} / "
        cell = Text(f"{used}{limit}")
        if key in quota["over"]:
            cell.append(" over", style="bold red")
        cells.append(cell)
    return cells


def _scope(cloud: str) -> str:
    return "all clouds" if cloud == "*" else f"cloud {cloud}"


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe=":")
