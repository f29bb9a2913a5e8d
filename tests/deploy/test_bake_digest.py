"""The digest of a baked image: what changes it, and what does not."""

from __future__ import annotations

from stratuslab.deploy import bake_digest
from stratuslab.deploy.model import ComponentModule, Module, parse_module
from stratuslab.deploy.plan import NodePlan, component_node
from stratuslab.errors import NotFound

BASE = "kind: image\nimages:\n  local: debian-12\n"
COMMON = """kind: component
parent: base
recipes:
  pre-install: |
    echo common pre
  packages: [curl]
"""
WEB = """kind: component
parent: common
recipes:
  packages: [nginx]
  post-install: |
    echo web post
  deployment: |
    echo web deployment
  report: |
    echo web report
"""
FINGERPRINT = "a" * 64


def node(**texts: str) -> NodePlan:
    sources = {"apps/base": BASE, "apps/common": COMMON, "apps/web": WEB}
    sources.update({f"apps/{k}": v for k, v in texts.items()})
    modules = {
        path: parse_module(text, path=path, file=f"{path}.yaml", version=1)
        for path, text in sources.items()
    }

    def lookup(path: str, version: int | None) -> tuple[Module, int]:
        if path not in modules:
            raise NotFound(path)
        return modules[path], 1

    web = modules["apps/web"]
    assert isinstance(web, ComponentModule)
    plan = component_node(web, 1, lookup, cloud="local", name="web")
    return plan.nodes["web"]


def digest(found: NodePlan, fingerprint: str = FINGERPRINT) -> str:
    return bake_digest.digest(found, base_fingerprint=fingerprint)


def test_the_digest_covers_the_whole_chain_of_install_steps() -> None:
    web = node()
    assert web.packages == ("curl", "nginx")
    assert [s for _, s in web.recipes["pre-install"]] == ["echo common pre\n"]
    first = digest(web)
    assert len(first) == 64 and digest(node()) == first  # stable
    changed_parent = COMMON.replace("echo common pre", "echo common pre, changed")
    assert digest(node(common=changed_parent)) != first


def test_a_deployment_or_report_recipe_change_keeps_the_digest() -> None:
    first = digest(node())
    assert digest(node(web=WEB.replace("echo web deployment", "echo other"))) == first
    assert digest(node(web=WEB.replace("echo web report", "echo other"))) == first


def test_a_package_pin_a_post_install_change_or_another_base_image_changes_it() -> None:
    first = digest(node())
    assert digest(node(web=WEB.replace("[nginx]", "[nginx=1.22.1-9]"))) != first
    assert digest(node(web=WEB.replace("echo web post", "echo web post 2"))) != first
    assert digest(node(), "b" * 64) != first


def test_the_plans_of_a_bake_and_of_a_baked_node() -> None:
    web = node()
    baking = bake_digest.install_only(web)
    assert baking.recipes["deployment"] == () and baking.recipes["report"] == ()
    assert baking.recipes["post-install"] == web.recipes["post-install"]
    assert baking.packages == web.packages
    baked = bake_digest.from_baked(web, image="alice/bake-0123", value="0123")
    assert baked.image == "alice/bake-0123" and baked.packages == ()
    assert baked.recipes["pre-install"] == () and baked.recipes["post-install"] == ()
    assert baked.recipes["deployment"] == web.recipes["deployment"]
    assert baked.baked is not None
    assert baked.baked["skipped"] == ["pre-install", "packages", "post-install"]
    assert baked.baked["pristine"] == "debian-12"
    # A run keeps it in its plan, and reads it back.
    assert NodePlan.from_dict(baked.to_dict()) == baked


def test_installed_versions_are_read_from_dpkg_query() -> None:
    assert bake_digest.package_names(("nginx=1.22*", "curl/bookworm", "curl", "jq")) == [
        "nginx",
        "curl",
        "jq",
    ]
    answer = "nginx\t1.22.1-9\nlibc6:amd64\t2.36-9+deb12u4\nnonsense line\n"
    assert bake_digest.parse_installed(answer) == {"nginx": "1.22.1-9", "libc6": "2.36-9+deb12u4"}
