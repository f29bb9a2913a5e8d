"""What a baked image of a node's component holds, as one digest, and the plans that use it.

A baked image is a pristine image after the install steps of a component's whole parent chain
(pre-install, packages, post-install) have run in it. Its digest is the SHA-256 of exactly what
went into it: the base image's fingerprint on the node's cloud (an image rebuilt from another
mirror or recipe is other bytes), the scripts of those three steps parent first, and the
packages as written (``nginx`` and ``nginx=1.22.1-9`` differ). What is not baked is not in it:
the deployment, report, on-vm-add and on-vm-remove recipes run at every deployment, so
changing them keeps the image. Neither are module paths: the same steps under another name
make the same image.

The versions apt chose for unpinned packages are known only once the bake has run, so they
are recorded with the image (``dpkg-query -W``) and shown, not hashed: hashing them would need
a bake to know whether a bake is needed. A package that a mirror updates later is therefore
not a new digest; pin its version in the module (a new digest) or bake with ``--pristine``
deployments to take it. Likewise the inputs install recipes may read are their defaults in a
bake and are not hashed: what a deployment gives reaches its deployment recipe only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from stratuslab.deploy.plan import NodePlan

FORMAT = 1  # bumped when what the digest covers changes, so that no old image matches
INSTALL_STEPS = ("pre-install", "packages", "post-install")  # baked into the image
DEPLOY_STEPS = ("deployment", "report", "on-vm-add", "on-vm-remove")  # run at every deployment
ALIAS_PREFIX = "bake-"
_DPKG_LINE = re.compile(r"^([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\t(\S+)$")


def digest(node: NodePlan, *, base_fingerprint: str) -> str:
    """The SHA-256 (hex) of what a bake of ``node``'s component on its cloud puts into it."""
    document = {
        "format": FORMAT,
        "base": base_fingerprint,
        "pre-install": [script for _, script in node.recipes.get("pre-install", ())],
        "packages": list(node.packages),
        "post-install": [script for _, script in node.recipes.get("post-install", ())],
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def alias(owner: str, value: str) -> str:
    """The backend's name of ``owner``'s baked image of digest ``value``."""
    return f"{owner}/{ALIAS_PREFIX}{value[:16]}"


def installs(node: NodePlan) -> bool:
    """Whether the node's component has anything to bake."""
    return bool(node.packages) or any(node.recipes.get(s) for s in INSTALL_STEPS)


def install_only(node: NodePlan) -> NodePlan:
    """``node`` as a bake runs it: its install steps, none of its deployment steps, and no
    volumes (an image holds the root disk, never what a volume holds)."""
    recipes = {step: (() if step in DEPLOY_STEPS else s) for step, s in node.recipes.items()}
    return replace(node, recipes=recipes, multiplicity=1, mappings={}, volumes=())


def from_baked(node: NodePlan, *, image: str, value: str) -> NodePlan:
    """``node`` starting from its baked image ``image``: the install steps are in it, so the
    plan its agents fetch holds only the deployment steps."""
    recipes = {step: (() if step in INSTALL_STEPS else s) for step, s in node.recipes.items()}
    baked = {
        "image": image,
        "digest": value,
        "pristine": node.image,
        "skipped": [
            s for s in INSTALL_STEPS if (node.packages if s == "packages" else node.recipes.get(s))
        ],
    }
    return replace(node, image=image, recipes=recipes, packages=(), baked=baked)


def package_names(packages: tuple[str, ...]) -> list[str]:
    """The package names apt was asked for (``nginx=1.22*`` and ``nginx/bookworm`` are nginx)."""
    return list(dict.fromkeys(re.split(r"[=/]", p, maxsplit=1)[0] for p in packages if p))


def parse_installed(output: str) -> dict[str, str]:
    """``dpkg-query -W -f '${Package}\\t${Version}\\n'``'s answer as package -> version."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        match = _DPKG_LINE.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def summary(details: Mapping[str, Any]) -> str:
    """A baked image's packages in a line: ``nginx 1.22.1-9, curl 7.88.1``."""
    packages = details.get("packages") or {}
    return ", ".join(f"{name} {version}" for name, version in sorted(packages.items()))
