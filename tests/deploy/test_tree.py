"""The tree on disk: what load_tree will read, and what it refuses to."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratuslab.deploy.tree import load_tree
from stratuslab.deploy.yamlsource import MAX_MODULE_BYTES
from stratuslab.errors import Invalid

IMAGE = "kind: image\nimages:\n  local: debian-12\n"
APP = "kind: application\nnodes:\n  web:\n    component: ../lib/web\n"
WEB = "kind: component\nparent: base\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository (``repo``) beside a directory that is not part of it (``outside``)."""
    root = tmp_path / "repo"
    for file, text in {"apps/app/module.yaml": APP, "apps/lib/base.yaml": IMAGE}.items():
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text(text)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/web.yaml").write_text(WEB)
    return root


def refused(root: Path, target: str = "apps/app") -> Invalid:
    with pytest.raises(Invalid) as caught:
        load_tree(root, target)
    return caught.value


def test_a_module_file_linked_outside_the_repository_is_refused(repo: Path) -> None:
    (repo / "apps/lib/web.yaml").symlink_to(repo.parent / "outside/web.yaml")
    error = refused(repo)
    outside = (repo.parent / "outside/web.yaml").resolve()
    assert error.message == (
        f"apps/lib/web.yaml: is a symbolic link to {outside}, outside the repository "
        f"{repo.resolve()}"
    )


def test_a_directory_linked_outside_the_repository_is_refused(repo: Path) -> None:
    (repo / "apps/lib/base.yaml").rename(repo.parent / "outside/base.yaml")
    (repo / "apps/lib").rmdir()
    (repo / "apps/lib").symlink_to(repo.parent / "outside")
    error = refused(repo)
    assert error.message.startswith(
        f"apps/lib/web.yaml: is in apps/lib, which is a symbolic link to "
        f"{(repo.parent / 'outside').resolve()}, outside the repository"
    )


def test_the_target_itself_is_checked_too(repo: Path) -> None:
    (repo / "apps/other.yaml").symlink_to(repo.parent / "outside/web.yaml")
    assert refused(repo, "apps/other").message.startswith("apps/other.yaml: is a symbolic link")


def test_links_inside_the_repository_are_followed(repo: Path) -> None:
    (repo / "shared").mkdir()
    (repo / "shared/web.yaml").write_text(WEB)
    (repo / "apps/lib/web.yaml").symlink_to("../../shared/web.yaml")
    texts = load_tree(repo, "apps/app")
    assert [(t.path, t.file, t.text) for t in texts][1] == (
        "apps/lib/web",
        "apps/lib/web.yaml",
        WEB,
    )


def test_a_link_inside_that_leads_to_a_link_outside_is_refused(repo: Path) -> None:
    (repo / "shared").mkdir()
    (repo / "shared/web.yaml").symlink_to(repo.parent / "outside/web.yaml")
    (repo / "apps/lib/web.yaml").symlink_to("../../shared/web.yaml")
    assert refused(repo).message.startswith("apps/lib/web.yaml: is a symbolic link to ")


def test_a_loop_of_links_is_refused(repo: Path) -> None:
    (repo / "apps/lib/web.yaml").symlink_to("web2.yaml")
    (repo / "apps/lib/web2.yaml").symlink_to("web.yaml")
    # A file in a loop is not a file: load_tree does not find it, and says so.
    assert refused(repo).message.startswith("apps/app/module.yaml:4: nodes.web.component: no")


def test_load_tree_refuses_a_file_over_the_limit_without_reading_it(tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    with (tmp_path / "apps/big.yaml").open("wb") as file:
        file.truncate(MAX_MODULE_BYTES + 1)  # sparse: nothing to read, only its size
    with pytest.raises(Invalid) as caught:
        load_tree(tmp_path, "apps/big")
    assert caught.value.message.startswith(f"apps/big.yaml: is {MAX_MODULE_BYTES + 1} bytes")
