"""`stratus module check`: the files here, checked as a run would check them, with no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratuslab.cli.main import main
from tests.deploy.support import APP, BASE, DB, WEB
from tests.support import CliResult

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test application with ``greeting`` required, as the current directory."""
    (tmp_path / "apps/demo").mkdir(parents=True)
    for name, text in {
        "apps/base.yaml": BASE,
        "apps/db.yaml": DB,
        "apps/web.yaml": WEB.replace("greeting: {default: hello}", "greeting: {}"),
        "apps/demo/module.yaml": APP,
    }.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def check(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    code = main(["module", "check", *args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def test_a_required_input_must_be_mapped_or_given(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = check(capsys, "apps/demo")
    assert missing.code == 65
    assert missing.err.startswith(
        "error: apps/demo/module.yaml:5: nodes.web: required input 'greeting' of apps/web is "
        "not mapped; map it under parameters:, or give it with --param web:greeting=VALUE"
    )
    given = check(capsys, "apps/demo", "--param", "web:greeting=hi", "-o", "json")
    assert given.code == 0, given.err
    assert [m["path"] for m in json.loads(given.out)] == [
        "apps/demo",
        "apps/db",
        "apps/web",
        "apps/base",
    ]


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("greeting=hi", "error: 'greeting=hi': write it as --param NODE:NAME=VALUE"),
        ("web:greeting", "error: 'web:greeting': write it as --param NODE:NAME=VALUE"),
        ("cache:x=1", "error: command line: cache:x: node 'cache' does not exist"),
        ("web:nosuch=1", "error: command line: web:nosuch: 'nosuch' is not an input"),
    ],
)
def test_params_are_read_and_checked_as_deploy_reads_them(
    repository: Path, capsys: pytest.CaptureFixture[str], param: str, message: str
) -> None:
    result = check(capsys, "apps/demo", "--param", "web:greeting=hi", "--param", param)
    assert result.code == 65
    assert result.err.startswith(message)


def test_an_uppercase_node_is_refused_at_check_time(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repository / "apps/demo/module.yaml").write_text(APP.replace("  web:", "  Web:"))
    result = check(capsys, "apps/demo")
    assert result.code == 65
    assert result.err.startswith("error: apps/demo/module.yaml:5: nodes.Web: 'Web' is not a node")


def test_a_password_type_is_checked_and_a_misspelt_one_refused(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = repository / "apps/db.yaml"
    db.write_text(DB.replace("{description: the database password}", "{type: password}"))
    assert check(capsys, "apps/demo", "--param", "web:greeting=hi").code == 0
    db.write_text(DB.replace("{description: the database password}", "{type: pasword}"))
    result = check(capsys, "apps/demo", "--param", "web:greeting=hi")
    assert result.code == 65
    assert result.err.startswith(
        "error: apps/db.yaml:4: outputs.password.type: 'pasword' is not a parameter type "
        "(string, password)"
    )


@pytest.mark.parametrize(
    "target",
    sorted(
        str(path.relative_to(REPOSITORY))
        for path in [
            *REPOSITORY.glob("examples/**/*.yaml"),
            *REPOSITORY.glob("tests/integration/apps/**/*.yaml"),
        ]
    ),
)
def test_every_example_and_integration_module_passes_check(
    target: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPOSITORY)
    result = check(capsys, target)
    assert result.code == 0, result.err
