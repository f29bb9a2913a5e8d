"""`stratus cloud add|list|show|set|disable|enable|remove`: the site's clouds, through the
server (part of the `cloud` group; `cloud init` and `cloud status` work on this host).

Every user lists and shows the enabled clouds; site administrators change them and see their
options with every credential redacted. Secrets (a trust password, a cloud's secret key) are
read from stdin, never from an argument, which other users see in ``ps``. For a remote LXD,
the server enrols it (makes the client key pair where it is kept, pins the remote's
certificate, has it trust the client); a certificate given with ``--cert``/``--key`` is read
here and sent to the server, which keeps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stratuslab.cli.output import emit_json, err, out, output_option, plain, table
from stratuslab.cli.passwords import read_password
from stratuslab.cli.runtime import Runtime, pass_runtime
from stratuslab.errors import Invalid

_MAX_PEM_FILE = 16 * 1024  # a PEM certificate or key is ~2 KiB; the server takes 16 KiB


class _Cap(click.ParamType):  # type: ignore[type-arg]
    """A cap on instances: a number, or ``none`` for no cap of the site's."""

    name = "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int):
            return value
        if str(value).lower() == "none":
            return "none"
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'none'", param, ctx)


def _priority(command: Any) -> Any:
    return click.option(
        "--priority", type=int, help="placement tries clouds of lower priority first [100]"
    )(command)


def _max_instances(command: Any) -> Any:
    return click.option(
        "--max-instances",
        type=_Cap(),
        help="the site's cap on live instances there ('none': what the backend can host)",
    )(command)


@click.command("add")
@click.argument("name")
@click.option("--lxd", "lxd", metavar="https://HOST:8443", help="a remote LXD or Incus")
@click.option(
    "--trust-password-stdin",
    is_flag=True,
    help="the remote LXD's trust password, from stdin: it trusts a key pair the server makes",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a client certificate (PEM) the remote LXD trusts already",
)
@click.option(
    "--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="its key (PEM)"
)
@click.option(
    "--fingerprint",
    metavar="SHA256",
    help="the remote's certificate's SHA-256 (else trusted on first use)",
)
@click.option("--profile", help="the LXD profile instances get  [default]")
@click.option("--libcloud", "libcloud", metavar="PROVIDER", help="a public cloud: ec2, ...")
@click.option("--region", help="the public cloud's region")
@click.option("--key-id", help="the public cloud's access key id")
@click.option("--secret-stdin", is_flag=True, help="the access key's secret, from stdin")
@click.option("--endpoint", help="the public cloud's API URL, when not its provider's own")
@_priority
@_max_instances
@output_option
@pass_runtime
def add(
    rt: Runtime,
    name: str,
    lxd: str | None,
    trust_password_stdin: bool,
    cert: Path | None,
    key: Path | None,
    fingerprint: str | None,
    profile: str | None,
    libcloud: str | None,
    region: str | None,
    key_id: str | None,
    secret_stdin: bool,
    endpoint: str | None,
    priority: int | None,
    max_instances: int | str | None,
    output: str,
) -> None:
    """Register cloud NAME (site administrators): a remote LXD with --lxd, a public cloud
    with --libcloud. The server asks its backend for its capacity first: one that cannot be
    reached, or refuses the credentials, is not recorded."""
    if (lxd is None) == (libcloud is None):
        raise click.UsageError("give exactly one of --lxd URL and --libcloud PROVIDER")
    body: dict[str, Any] = {"name": name}
    if priority is not None:
        body["priority"] = priority
    if max_instances is not None and max_instances != "none":
        body["max_instances"] = max_instances
    if lxd is not None:
        _only_with("--libcloud", region=region, key_id=key_id, endpoint=endpoint)
        if secret_stdin:
            raise click.UsageError("--secret-stdin goes with --libcloud")
        if (cert is None) != (key is None):
            raise click.UsageError("--cert and --key go together")
        if trust_password_stdin and cert is not None:
            raise click.UsageError("give --trust-password-stdin or --cert/--key, not both")
        enrolment: dict[str, Any] = {"endpoint": lxd, "fingerprint": fingerprint}
        if profile is not None:
            enrolment["profile"] = profile
        if trust_password_stdin:
            enrolment["password"] = read_password(stdin=True, confirm=False)
        if cert is not None and key is not None:
            enrolment["cert_pem"], enrolment["key_pem"] = _pem(cert), _pem(key)
        body["lxd"] = enrolment
        what = f"LXD at {lxd}"
    else:
        _only_with("--lxd", fingerprint=fingerprint, profile=profile)
        if trust_password_stdin or cert is not None or key is not None:
            raise click.UsageError("--trust-password-stdin, --cert and --key go with --lxd")
        if region is None or key_id is None or not secret_stdin:
            raise click.UsageError("--libcloud needs --region, --key-id and --secret-stdin")
        secret = read_password(stdin=True, confirm=False)
        body["connector"] = "libcloud"
        body["options"] = {
            "provider": libcloud,
            "region": region,
            "key_id": key_id,
            "secret": secret,
            "endpoint": endpoint,
        }
        what = f"{libcloud} in {region}"
    with _working(output, f"probing {what}..."):
        view = rt.client.add_cloud(body)
    if output == "json":
        emit_json(view)
        return
    _say(f"cloud {view['name']}: added ({_summary(view)})")


@click.command("list")
@output_option
@pass_runtime
def list_clouds(rt: Runtime, output: str) -> None:
    """The clouds, in the order placement tries them (administrators see disabled ones too)."""
    found = rt.client.clouds()
    if output == "json":
        emit_json(found)
    elif not found:
        err.print(
            "No cloud is recorded yet: a site administrator runs `stratus cloud init`.",
            markup=False,
            highlight=False,
        )
    else:
        admin = any(c.get("options") is not None for c in found)
        columns = ["NAME", "CONNECTOR", "PRIORITY", "STATE", "MAX", "INSTANCES", "VOLUMES"]
        table(
            None,
            [*columns, "WHERE"] if admin else columns,
            (_row(c, admin=admin) for c in found),
        )


@click.command("show")
@click.argument("name")
@output_option
@pass_runtime
def show(rt: Runtime, name: str, output: str) -> None:
    """Cloud NAME: its settings, what the store records there, and its free capacity when
    its backend answers in seconds."""
    view = rt.client.cloud(name)
    if output == "json":
        emit_json(view)
        return
    _card(view)


@click.command("set")
@click.argument("name")
@_priority
@_max_instances
@output_option
@pass_runtime
def set_cloud(
    rt: Runtime, name: str, priority: int | None, max_instances: int | str | None, output: str
) -> None:
    """Change cloud NAME's priority or cap (site administrators)."""
    changes: dict[str, Any] = {}
    if priority is not None:
        changes["priority"] = priority
    if max_instances is not None:
        changes["max_instances"] = None if max_instances == "none" else max_instances
    if not changes:
        raise click.UsageError("give --priority or --max-instances")
    _changed(rt, name, changes, output)


@click.command("disable")
@click.argument("name")
@click.option("--reason", help="why, for people (kept until it is enabled again)")
@output_option
@pass_runtime
def disable(rt: Runtime, name: str, reason: str | None, output: str) -> None:
    """Take cloud NAME out of placement (site administrators): what runs there goes on, new
    instances go elsewhere."""
    changes: dict[str, Any] = {"enabled": False}
    if reason is not None:
        changes["note"] = reason
    _changed(rt, name, changes, output)


@click.command("enable")
@click.argument("name")
@output_option
@pass_runtime
def enable(rt: Runtime, name: str, output: str) -> None:
    """Put cloud NAME back into placement (site administrators); its note is cleared."""
    _changed(rt, name, {"enabled": True}, output)


@click.command("remove")
@click.argument("name")
@output_option
@pass_runtime
def remove(rt: Runtime, name: str, output: str) -> None:
    """Forget cloud NAME (site administrators): refused while instances or volumes live
    there. Nothing on its backend is touched."""
    view = rt.client.remove_cloud(name)
    if output == "json":
        emit_json(view)
    else:
        _say(f"cloud {view['name']}: removed")


COMMANDS = (add, list_clouds, show, set_cloud, disable, enable, remove)


def _changed(rt: Runtime, name: str, changes: dict[str, Any], output: str) -> None:
    view = rt.client.change_cloud(name, changes)
    if output == "json":
        emit_json(view)
    else:
        _say(f"cloud {view['name']}: {_summary(view)}")


def _only_with(other: str, **given: str | None) -> None:
    named = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
    if named:
        raise click.UsageError(f"{', '.join(named)} go(es) with {other}")


def _pem(path: Path) -> str:
    data = path.read_bytes()[: _MAX_PEM_FILE + 1]
    if len(data) > _MAX_PEM_FILE or b"-----BEGIN " not in data:
        raise Invalid(f"{path} is not a PEM file of at most {_MAX_PEM_FILE} bytes")
    return data.decode("ascii", errors="replace")


def _state(view: dict[str, Any]) -> str:
    if view["enabled"]:
        return "enabled"
    return "disabled" + (f": {view['note']}" if view.get("note") else "")


def _where(view: dict[str, Any]) -> str:
    options = view.get("options") or {}
    return str(options.get("endpoint") or options.get("region") or "")


def _summary(view: dict[str, Any]) -> str:
    cap = view["max_instances"]
    parts = [
        view["connector"] + (f" at {_where(view)}" if _where(view) else ""),
        f"priority {view['priority']}",
        f"at most {cap} instances" if cap is not None else "",
        _state(view),
    ]
    return ", ".join(p for p in parts if p)


def _row(view: dict[str, Any], *, admin: bool) -> list[Any]:
    cap = view["max_instances"]
    row = [
        view["name"],
        view["connector"],
        view["priority"],
        _state(view),
        "-" if cap is None else cap,
        view["instances"],
        view["volumes"],
    ]
    return [*row, _where(view)] if admin else row


def _card(view: dict[str, Any]) -> None:
    cap = view["max_instances"]
    capacity = view.get("capacity")
    rows: list[tuple[str, Any]] = [
        ("name", view["name"]),
        ("connector", view["connector"]),
        ("state", _state(view)),
        ("priority", view["priority"]),
        ("max instances", "none set (the backend's capacity)" if cap is None else cap),
        ("instances", f"{view['instances']} live"),
        ("volumes", f"{view['volumes']} not gone"),
        ("capacity", _capacity(capacity) if capacity else f"unknown: {view['capacity_error']}"),
    ]
    for key, value in sorted((view.get("options") or {}).items()):
        rows.append((f"option {key}", _short(value)))
    table(None, ("", ""), rows)


def _capacity(found: dict[str, Any]) -> str:
    parts = [
        f"{found['cpus']} CPUs" if found.get("cpus") else "",
        f"{found['memory_free_mb']} of {found['memory_total_mb']} MiB memory free"
        if found.get("memory_total_mb")
        else "",
        f"{found['disk_free_mb']} MiB disk free" if found.get("disk_free_mb") is not None else "",
    ]
    return ", ".join(p for p in parts if p) or "the backend does not say"


def _short(value: Any) -> str:
    """An option for a card: a PEM certificate as its first line and size."""
    text = "" if value is None else str(value)
    if text.startswith("-----BEGIN "):
        return f"{text.splitlines()[0]} ({len(text)} characters)"
    return text


def _say(line: str) -> None:
    out.print(plain(line))


def _working(output: str, what: str) -> Any:
    from contextlib import nullcontext

    return nullcontext() if output == "json" else err.status(what, spinner="dots")
