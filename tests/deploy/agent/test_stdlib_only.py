"""Every module of the agent imports the standard library and its own package, nothing else, and
its own package only relatively: the same files are ``stratus_agent`` inside the zipapp, and
run on nodes whose Python may be as old as 3.9."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import stratuslab.deploy.agent

PACKAGE = Path(stratuslab.deploy.agent.__file__).parent
MODULES = sorted(path.name for path in PACKAGE.glob("*.py"))


def test_the_package_has_its_modules() -> None:
    assert {"__init__.py", "__main__.py", "protocol.py", "tools.py", "loop.py"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_a_module_imports_only_the_standard_library_and_its_siblings(name: str) -> None:
    tree = ast.parse((PACKAGE / name).read_text(), name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.partition(".")[0]
                assert top in sys.stdlib_module_names, f"{name}:{node.lineno}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            where = f"{name}:{node.lineno}: from {'.' * node.level}{node.module or ''}"
            if node.level == 0:
                assert node.module is not None
                top = node.module.partition(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", where
            else:
                assert node.level == 1, f"{where}: only the package's own modules"
                targets = [node.module] if node.module else [a.name for a in node.names]
                for target in targets:
                    assert (PACKAGE / f"{target}.py").is_file(), f"{where}: no module {target}"


@pytest.mark.parametrize("name", MODULES)
def test_a_module_is_python_3_9(name: str) -> None:
    ast.parse((PACKAGE / name).read_text(), name, feature_version=(3, 9))
