"""Baking on real LXD, end to end through the CLI: one bake shared by the module's tests.

The component (tests/integration/apps/bakeme) installs a small package and writes a file in
post-install; the image it becomes is read without booting it (a created, never started
container's files), since a boot makes a machine-id and ssh host keys again.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stratuslab.cloud.connectors.lxd_api import LxdApi
from tests.integration.conftest import Stratus, cli_json, destroy_container

pytestmark = pytest.mark.lxd
APP = Path("tests/integration/apps/bakeme")


def in_copy(env: dict[str, str], root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`stratus ARGS...` run in the copy of the modules, as a user runs it in their repository."""
    return subprocess.run(
        [sys.executable, "-m", "stratuslab", *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def baked(
    stratus: Stratus, live_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The bake of a copy of the component (so that a test may change it), and its image."""
    root = tmp_path_factory.mktemp("bakeme")
    shutil.copytree(APP.parent, root / "apps", dirs_exist_ok=True)
    env = {**live_env, "PYTHONPATH": str(Path("src").resolve())}
    result = in_copy(env, root, "image", "bake", "apps/bakeme/web.yaml", "-o", "json")
    made = json.loads(result.stdout) if result.stdout else {}
    try:
        assert result.returncode == 0, result.stderr
        yield made | {"root": root, "env": env, "stderr": result.stderr}
    finally:
        for image in _our_images(made):
            subprocess.run(["lxc", "image", "delete", image], capture_output=True, check=False)


def _our_images(made: dict[str, Any]) -> list[str]:
    name = (made.get("image") or {}).get("name")
    if not name:
        return []
    owner = name.split("/", 1)[0]
    listed = subprocess.run(
        ["lxc", "image", "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    return [
        a["name"]
        for i in json.loads(listed.stdout)
        for a in i.get("aliases") or []
        if a["name"].startswith(f"{owner}/bake-")
    ]


def _pull(container: str, path: str, target: Path) -> Path:
    subprocess.run(
        ["lxc", "file", "pull", "-r", f"{container}{path}", str(target)],
        capture_output=True,
        check=True,
    )
    return target / Path(path).name


def test_the_image_holds_what_was_installed_and_nothing_of_the_instance(
    baked: dict[str, Any], lxd: LxdApi, tmp_path: Path
) -> None:
    image = baked["image"]
    assert not baked["failed"] and not baked["cached"]
    assert "hello" in image["packages"]
    box = f"test-bake-{secrets.token_hex(4)}"
    made = subprocess.run(
        ["lxc", "init", image["name"], box, "--profile", "stratus"], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    try:
        assert _pull(box, "/etc/bakeme", tmp_path).read_text() == "baked\n"
        assert _pull(box, "/usr/bin/hello", tmp_path).stat().st_size > 0
        assert _pull(box, "/etc/machine-id", tmp_path).read_text() == ""
        ssh = _pull(box, "/etc/ssh", tmp_path)
        assert not list(ssh.glob("ssh_host_*")), list(ssh.iterdir())
        lists = _pull(box, "/var/lib/apt/lists", tmp_path)
        assert [p.name for p in lists.iterdir()] == ["partial"]
        etc = _pull(box, "/etc/systemd/system", tmp_path)
        assert not list(etc.rglob("stratus-agent.service"))
        for gone in ("/etc/stratus", "/var/lib/stratus-agent", "/var/lib/stratus-context"):
            missing = subprocess.run(
                ["lxc", "file", "pull", "-r", f"{box}{gone}", str(tmp_path / "x")],
                capture_output=True,
                check=False,
            )
            assert missing.returncode != 0, f"{gone} is in the image"
    finally:
        destroy_container(lxd, box)


def test_nothing_changed_answers_the_same_image_at_once(
    baked: dict[str, Any], stratus: Stratus
) -> None:
    answer = in_copy(baked["env"], baked["root"], "image", "bake", "apps/bakeme/web", "-o", "json")
    assert answer.returncode == 0, answer.stderr
    again = json.loads(answer.stdout)
    assert again["cached"] and again["image"]["name"] == baked["image"]["name"]


def test_a_deployment_starts_from_it_and_runs_only_its_deployment_recipe(
    baked: dict[str, Any], stratus: Stratus
) -> None:
    result = in_copy(
        baked["env"],
        baked["root"],
        "deploy",
        "apps/bakeme",
        "--keep-running",
        "never",
        "-o",
        "json",
    )
    run = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert run["baked"]["web"]["image"] == baked["image"]["name"]
    logs = stratus("run", "logs", run["id"])
    assert "DEPLOYMENT-MARK" in logs.stdout
    assert "PRE-INSTALL-MARK" not in logs.stdout and "POST-INSTALL-MARK" not in logs.stdout
    pristine = in_copy(
        baked["env"], baked["root"], "deploy", "apps/bakeme", "--pristine", "--keep-running",
        "never", "-o", "json",
    )  # fmt: skip
    assert pristine.returncode == 0, pristine.stderr
    logs = stratus("run", "logs", json.loads(pristine.stdout)["id"])
    assert "PRE-INSTALL-MARK" in logs.stdout and "DEPLOYMENT-MARK" in logs.stdout


def test_prune_removes_the_image_once_its_component_changed(
    baked: dict[str, Any], stratus: Stratus
) -> None:
    web = baked["root"] / "apps/bakeme/web.yaml"
    web.write_text(web.read_text().replace("echo baked >", "echo changed >"))
    pushed = in_copy(baked["env"], baked["root"], "module", "push", "apps/bakeme/web.yaml")
    assert pushed.returncode == 0, pushed.stderr
    (row,) = [
        i for i in cli_json(stratus, "image", "list", "--baked")
        if i["name"] == baked["image"]["name"]
    ]  # fmt: skip
    assert row["stale"], row
    pruned = cli_json(stratus, "image", "prune")
    assert baked["image"]["name"] in [i["name"] for i in pruned["deleted"]]
    assert not _our_images(baked)
