"""stratus-context, the base image's contextualization service, run in a temporary directory:
what each stage reads, writes and runs. (tests/integration/test_instances.py runs it in LXD.)"""

from __future__ import annotations

import ast
import json
import socketserver
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from stratuslab.cloud.guest import context
from stratuslab.cloud.guest.context import Context, Document, Locations, parse

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvZ0g4a test@host"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther0 other@host"


def cloud_config(**config: object) -> str:
    return "#cloud-config\n" + json.dumps(config)


@pytest.fixture
def locations(tmp_path: Path) -> Locations:
    (tmp_path / "root").mkdir()
    (tmp_path / "home").mkdir()
    return Locations(
        state_dir=tmp_path / "state",
        log_file=tmp_path / "context.log",
        devlxd=tmp_path / "no-lxd.sock",
        root=tmp_path / "root",
        home=tmp_path / "home",
    )


def context_with(locations: Locations, documents: dict[str, str], apt: str = "apt-get") -> Context:
    return Context(locations, fetch=documents.get, apt=apt)


def test_parse_knows_cloud_config_and_scripts_only() -> None:
    assert parse(cloud_config(packages=["nginx"])) == Document(
        "config", {"packages": ["nginx"]}, ""
    )
    assert parse("#cloud-config\n") == Document("config", {}, "")
    assert parse("#!/bin/sh\necho hi\n") == Document("script", {}, "#!/bin/sh\necho hi\n")
    assert parse("just text") is None
    assert parse("") is None and parse(None) is None
    with pytest.raises(ValueError, match="JSON object"):
        parse("#cloud-config\n[1, 2]")


def test_init_keeps_the_documents_installs_keys_and_writes_files(locations: Locations) -> None:
    authorized = locations.home / ".ssh" / "authorized_keys"
    authorized.parent.mkdir()
    authorized.write_text(f"{OTHER_KEY}\n")
    vendor = cloud_config(
        ssh_authorized_keys=[KEY, OTHER_KEY, KEY],
        write_files=[
            {"path": "/etc/stratus/hello", "content": "hi\n", "permissions": "0600"},
            {"path": "/opt/empty"},
        ],
    )
    user = "#!/bin/sh\necho user\n"
    ctx = context_with(locations, {"user.vendor-data": vendor, "user.user-data": user})
    assert ctx.init() == 0
    assert authorized.read_text() == f"{OTHER_KEY}\n{KEY}\n"  # each key once, the old one kept
    assert authorized.stat().st_mode & 0o777 == 0o600
    hello = locations.root / "etc/stratus/hello"
    assert hello.read_text() == "hi\n" and hello.stat().st_mode & 0o777 == 0o600
    empty = locations.root / "opt/empty"
    assert empty.read_text() == "" and empty.stat().st_mode & 0o777 == 0o644
    assert (locations.state_dir / "user.vendor-data").read_text() == vendor
    assert (locations.state_dir / "user.user-data").read_text() == user
    assert (locations.state_dir / "init.done").exists()
    assert not (locations.state_dir / "final.done").exists()
    assert "installed 3 ssh key(s) for root" in locations.log_file.read_text()


def test_init_with_nothing_to_read_only_says_it_is_done(locations: Locations) -> None:
    assert context_with(locations, {}).init() == 0
    assert sorted(p.name for p in locations.state_dir.iterdir()) == ["init.done"]
    assert not (locations.home / ".ssh").exists()


def _fake_apt(tmp_path: Path) -> Path:
    apt = tmp_path / "fake-apt"
    apt.write_text(f'#!/bin/sh\necho "apt $*" >> {tmp_path / "calls"}\n')
    apt.chmod(0o755)
    return apt


def _saved(locations: Locations, documents: dict[str, str]) -> None:
    """What init keeps, for final to read."""
    locations.state_dir.mkdir(parents=True)
    for key, text in documents.items():
        (locations.state_dir / key).write_text(text)


@pytest.mark.spawns
def test_final_installs_packages_then_runs_commands_and_scripts(
    tmp_path: Path, locations: Locations
) -> None:
    calls = tmp_path / "calls"
    vendor = cloud_config(
        packages=["nginx", "curl"],
        runcmd=[
            f'echo "sh $PWD $HOME $DEBIAN_FRONTEND" >> {calls}',
            ["sh", "-c", f"echo list >> {calls}"],
        ],
    )
    user = f"#!/bin/sh\necho script >> {calls}\necho to-the-log\n"
    _saved(locations, {"user.vendor-data": vendor, "user.user-data": user})
    ctx = context_with(locations, {}, apt=str(_fake_apt(tmp_path)))
    assert ctx.final() == 0
    assert calls.read_text().splitlines() == [
        "apt update -q",
        "apt install -y -q nginx curl",
        f"sh {locations.home} {locations.home} noninteractive",
        "list",
        "script",
    ]
    status = json.loads((locations.state_dir / "final.status").read_text())
    assert status["exit_code"] == 0 and status["seconds"] >= 0
    assert (locations.state_dir / "final.done").exists()
    assert "to-the-log" in locations.log_file.read_text()


@pytest.mark.spawns
def test_the_first_failure_ends_final_and_is_its_exit_code(
    tmp_path: Path, locations: Locations
) -> None:
    calls = tmp_path / "calls"
    vendor = cloud_config(
        package_update=True, runcmd=[f"echo one >> {calls}", "exit 3", f"echo two >> {calls}"]
    )
    _saved(locations, {"user.vendor-data": vendor, "user.user-data": "#!/bin/sh\necho no\n"})
    ctx = context_with(locations, {}, apt=str(_fake_apt(tmp_path)))
    assert ctx.final() == 3
    assert calls.read_text().splitlines() == ["apt update -q", "one"]
    assert json.loads((locations.state_dir / "final.status").read_text())["exit_code"] == 3
    assert (locations.state_dir / "final.done").exists()
    assert not (locations.state_dir / "user.user-data.script").exists()


class _DevLxd(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def devlxd(tmp_path: Path) -> Iterator[Path]:
    """LXD's /dev/lxd/sock, as far as stratus-context asks it: one user.* key set."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/1.0/config/user.user-data":
                body = b"#!/bin/sh\necho from lxd\n"
                self.send_response(200)
            else:
                body = b"not found"
                self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    path = tmp_path / "lxd.sock"
    server = _DevLxd(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def test_documents_come_from_lxd_through_its_socket(devlxd: Path, locations: Locations) -> None:
    assert context.devlxd_fetch(devlxd, "user.user-data") == "#!/bin/sh\necho from lxd\n"
    assert context.devlxd_fetch(devlxd, "user.vendor-data") is None
    assert context.devlxd_fetch(devlxd.with_name("absent.sock"), "user.user-data") is None
    ctx = Context(Locations(**{**vars(locations), "devlxd": devlxd}))
    assert ctx.init() == 0
    assert (locations.state_dir / "user.user-data").read_text() == "#!/bin/sh\necho from lxd\n"
    assert not (locations.state_dir / "user.vendor-data").exists()


def test_main_runs_the_stage_named(
    locations: Locations, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = context_with(locations, {})
    assert context.main(["stratus-context", "init"], ctx) == 0
    assert (locations.state_dir / "init.done").exists()
    assert context.main(["stratus-context"], ctx) == context.USAGE
    assert context.main(["stratus-context", "other"], ctx) == context.USAGE
    assert capsys.readouterr().err == "usage: stratus-context init|final\n" * 2


def test_it_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(context.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "it runs as a lone script: no relative imports"
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.partition(".")[0]
            assert top in sys.stdlib_module_names or top == "__future__", name


def test_it_runs_as_the_script_the_units_start() -> None:
    source = Path(context.__file__).read_text()
    assert source.startswith("#!/usr/bin/python3\n")
    assert source.rstrip().endswith('if __name__ == "__main__":\n    sys.exit(main(sys.argv))')
