"""``stratus module check``'s work: the tree on disk resolved as the server resolves a run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stratuslab.deploy.check import check_tree
from stratuslab.errors import Invalid

FILES = {
    "lib/debian.yaml": "kind: image\nimages:\n  local: debian-12\n",
    "lib/base.yaml": "kind: component\nparent: debian\noutputs:\n  ready: {}\n",
    "apps/db.yaml": """
        kind: component
        parent: ../lib/base
        outputs:
          password: {}
        """,
    "apps/web.yaml": """
        kind: component
        parent: ../lib/base
        inputs:
          db_password: {}
          greeting: {}
        """,
    "apps/site/module.yaml": """
        kind: application
        nodes:
          db:
            component: ../db
          web:
            component: ../web
            parameters:
              db_password: db:password
              greeting: "'hi'"
        """,
}


def write(root: Path, file: str, text: str) -> None:
    (root / file).parent.mkdir(parents=True, exist_ok=True)
    (root / file).write_text(textwrap.dedent(text).lstrip("\n"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for file, text in FILES.items():
        write(tmp_path, file, text)
    return tmp_path


def refused(root: Path, target: str = "apps/site", **given: str) -> Invalid:
    with pytest.raises(Invalid) as caught:
        check_tree(root, target, given={k.replace("__", ":"): v for k, v in given.items()})
    return caught.value


def test_a_sound_tree_is_checked_whole(repo: Path) -> None:
    texts = check_tree(repo, "apps/site")
    assert [t.path for t in texts] == [
        "apps/site",
        "apps/db",
        "apps/web",
        "lib/base",
        "lib/debian",
    ]


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "apps/site/module.yaml",
            "db_password: db:password",
            "db_password: dbb:password",
            "apps/site/module.yaml:8: nodes.web.parameters.db_password: node 'dbb' does not "
            "exist (nodes: db, web)",
        ),
        (
            "apps/site/module.yaml",
            "db_password: db:password",
            "db_password: db:pasword",
            "apps/site/module.yaml:8: nodes.web.parameters.db_password: 'pasword' is neither "
            "an output of apps/db (outputs: password, ready)",
        ),
        (
            "apps/site/module.yaml",
            "      greeting: \"'hi'\"\n",
            "",
            "apps/site/module.yaml:5: nodes.web: required input 'greeting' of apps/web is not "
            "mapped",
        ),
        (
            "apps/site/module.yaml",
            "    component: ../db\n",
            "    component: ../db\n    cloud: eu\n",
            "apps/site/module.yaml:5: nodes.db.cloud: no image for cloud 'eu' at the root of "
            "apps/db's parents (lib/debian has: local)",
        ),
        (
            "lib/base.yaml",
            "parent: debian",
            "parent: ../apps/db",
            "lib/base.yaml:2: parent: a cycle of parents: apps/db -> lib/base -> apps/db",
        ),
        (
            "apps/db.yaml",
            "parent: ../lib/base",
            "parent: db",
            "apps/db.yaml:2: parent: a cycle of parents: apps/db -> apps/db",
        ),
        (
            "apps/db.yaml",
            "parent: ../lib/base",
            "parent: site",
            "apps/db.yaml:2: parent: apps/site is an application; a parent is an image or a "
            "component",
        ),
    ],
)
def test_what_a_run_would_refuse_check_refuses(
    repo: Path, file: str, old: str, new: str, message: str
) -> None:
    text = (repo / file).read_text()
    assert old in text
    (repo / file).write_text(text.replace(old, new))
    assert refused(repo).message.startswith(message)


def test_a_required_input_may_be_given_as_a_run_would_be(repo: Path) -> None:
    text = (repo / "apps/site/module.yaml").read_text()
    (repo / "apps/site/module.yaml").write_text(text.replace("      greeting: \"'hi'\"\n", ""))
    assert check_tree(repo, "apps/site", given={"web:greeting": "hello"})
    assert refused(repo, web__greting="x").message.startswith(
        "command line: web:greting: 'greting' is not an input of apps/web"
    )


def test_a_component_is_checked_for_what_it_inherits(repo: Path) -> None:
    assert [t.path for t in check_tree(repo, "apps/db")] == ["apps/db", "lib/base", "lib/debian"]
    write(repo, "apps/bad.yaml", "kind: component\nparent: ../lib/base\ninputs:\n  ready: {}\n")
    assert refused(repo, "apps/bad").message == (
        "apps/bad.yaml:4: inputs.ready: 'ready' is an output of lib/base; a parameter is "
        "either an input or an output"
    )
    assert refused(repo, "apps/db", db__x="1").message == (
        "command line: --param is for an application; apps/db is a component"
    )


def test_a_pinned_version_cannot_be_checked_here_and_says_where_it_is(repo: Path) -> None:
    text = (repo / "apps/site/module.yaml").read_text()
    (repo / "apps/site/module.yaml").write_text(text.replace("../db\n", "../db/3\n"))
    error = refused(repo)
    assert error.message == "apps/site/module.yaml:4: nodes.db.component: no module 'apps/db/3'"
    assert error.hint is not None and "`stratus deploy` checks it there" in error.hint
