"""The tree on disk: a module and every module it refers to, read from a repository.

:func:`load_tree` is what the CLI pushes and checks and a watch verifies; each file is read
with :func:`stratuslab.deploy.model.parse_module`, within the bounds of
``deploy/yamlsource.py``, and never from outside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from stratuslab.deploy import yamlsource
from stratuslab.deploy.kinds import ApplicationModule, ComponentModule, Module, ModuleText
from stratuslab.deploy.model import parse_module
from stratuslab.deploy.references import module_path, resolve_reference
from stratuslab.errors import Invalid


def load_tree(root: Path, target: str) -> list[ModuleText]:
    """Read the module at ``target`` (relative to ``root``: a directory with module.yaml, or a
    file with or without .yaml) and every module it refers to, each once, target first.
    Version-pinned references (``db/3``) name a stored version: they are left to the server.
    A file, or a directory on the way to it, that is a symbolic link to somewhere outside
    ``root`` is refused."""
    return [text for text, _ in read_tree(root, target)]


def read_tree(root: Path, target: str) -> list[tuple[ModuleText, Module]]:
    """:func:`load_tree`, with each module as parsed."""
    first = _target_file(root, target)
    queue = [(module_path(root, first), first.as_posix())]
    found: list[tuple[ModuleText, Module]] = []
    queued = {queue[0][0]}
    while queue:
        path, file = queue.pop(0)
        text = _read(root, file)
        module = parse_module(text, path=path, file=file)
        found.append((ModuleText(path, file, text), module))
        for key, ref in _references(module):
            ref_path, version = resolve_reference(ref, base=module.base)
            if version is not None or ref_path in queued:
                continue
            candidates = _candidates(root, ref_path)
            if len(candidates) != 1:
                raise module.error(key, _not_one(ref_path, candidates))
            queue.append((ref_path, candidates[0].as_posix()))
            queued.add(ref_path)
    return found


def _references(module: Module) -> list[tuple[str, str]]:
    """(key, reference) for every module ``module`` refers to."""
    if isinstance(module, ComponentModule):
        return [("parent", module.parent)]
    if isinstance(module, ApplicationModule):
        return [(f"nodes.{name}.component", node.component) for name, node in module.nodes.items()]
    return []


def _candidates(root: Path, path: str) -> list[Path]:
    """The files that could hold the module at ``path``, relative to ``root``, that exist."""
    options = [Path(f"{path}.yaml"), Path(path, "module.yaml")]
    return [option for option in options if (root / option).is_file()]


def _not_one(path: str, candidates: list[Path]) -> str:
    if candidates:
        return f"{path!r} is both {candidates[0].as_posix()} and {candidates[1].as_posix()}"
    return f"no module {path!r} (looked for {path}.yaml and {path}/module.yaml)"


def _target_file(root: Path, target: str) -> Path:
    given = Path(target)
    if given.is_absolute():
        given = Path(os.path.relpath(given, root.absolute()))
    if given.suffix == ".yaml":
        if not (root / given).is_file():
            raise Invalid(f"no module file {given.as_posix()}")
        return given
    path = given.as_posix().rstrip("/")
    candidates = _candidates(root, path)
    if len(candidates) != 1:
        raise Invalid(_not_one(path, candidates))
    return candidates[0]


def _read(root: Path, file: str) -> str:
    real = _inside(root, file)
    try:
        yamlsource.check_size(real.stat().st_size, file=file)  # before reading all of it
        data = real.read_bytes()
    except OSError as exc:
        raise Invalid(f"{file}: cannot be read: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise Invalid(f"{file}:{line}: not UTF-8 text") from None


def _inside(root: Path, file: str) -> Path:
    """Where ``root / file`` really is, once every symbolic link on the way is followed. A link
    may point anywhere inside the repository; one that leads out of it is refused: what it
    points at is not part of the repository, yet would be pushed (and shown) as if it were."""
    top = root.resolve()
    here = root
    for part in Path(file).parts:
        here = here / part
        if not here.is_symlink():
            continue
        try:
            target = here.resolve()
        except (RuntimeError, OSError):  # a loop of links (3.11 raises the first, 3.13 the other)
            raise Invalid(f"{file}: cannot be read: a loop of symbolic links") from None
        if not target.is_relative_to(top):
            link = here.relative_to(root).as_posix()
            which = "is" if link == file else f"is in {link}, which is"
            raise Invalid(
                f"{file}: {which} a symbolic link to {target}, outside the repository {top}",
                hint="copy what it points at into the repository, or point the link inside it",
            )
    return here.resolve()
