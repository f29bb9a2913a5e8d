"""The image builder's cache: the real debootstrap build is exercised by `make setup` in CI and
its result is checked on LXD in tests/integration/test_base_image.py."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import yaml

from stratuslab.cloud import images
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.images import ImageBuilder
from stratuslab.errors import Invalid


def _archive(path: Path, key: str) -> Path:
    metadata = yaml.safe_dump(
        {"properties": {"stratus.recipe": key, "description": "test"}}
    ).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("metadata.yaml")
        info.size = len(metadata)
        tar.addfile(info, io.BytesIO(metadata))
    return path


def test_the_key_changes_with_the_recipe_the_mirror_and_the_image_files(
    tmp_path: Path, fake_namespace: str
) -> None:
    connector = FakeConnector(namespace=fake_namespace)
    builder = ImageBuilder(connector, cache_dir=tmp_path, mirror="http://deb.debian.org/debian")
    recipe = builder.recipe("debian-12")
    key = builder.key(recipe)
    assert key == builder.key(recipe)
    other_mirror = ImageBuilder(
        connector, cache_dir=tmp_path, mirror="http://mirror.example/debian"
    )
    assert other_mirror.key(recipe) != key
    from dataclasses import replace

    assert builder.key(replace(recipe, include=(*recipe.include, "vim"))) != key


def test_a_matching_image_is_a_cache_hit_and_nothing_is_built(
    tmp_path: Path, fake_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connector = FakeConnector(namespace=fake_namespace, images=())
    builder = ImageBuilder(connector, cache_dir=tmp_path, mirror="http://deb.debian.org/debian")
    key = builder.key(builder.recipe("debian-12"))
    archive = _archive(tmp_path / "a.tar", key)
    connector.import_image(archive, name="debian-12", sha256="f" * 64)

    def no_build(*_args: object) -> Path:
        raise AssertionError("the cached image should have been used")

    monkeypatch.setattr(ImageBuilder, "_build_archive", no_build)
    result = builder.build("debian-12")
    assert result.cached and result.image.fingerprint == "f" * 64 and result.seconds < 1


def test_a_stale_image_is_rebuilt_and_replaced(
    tmp_path: Path, fake_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connector = FakeConnector(namespace=fake_namespace, images=())
    builder = ImageBuilder(
        connector, cache_dir=tmp_path / "cache", mirror="http://deb.debian.org/debian"
    )
    key = builder.key(builder.recipe("debian-12"))
    connector.import_image(
        _archive(tmp_path / "old.tar", "an-old-key"), name="debian-12", sha256="0" * 64
    )
    built: list[str] = []

    def fake_build(
        _self: ImageBuilder, recipe: images.Recipe, key_: str, work: Path, _report: object
    ) -> Path:
        built.append(recipe.name)
        work.mkdir(parents=True)
        return _archive(work / "image.tar", key_)

    monkeypatch.setattr(ImageBuilder, "_build_archive", fake_build)
    stages: list[str] = []
    result = builder.build(
        "debian-12", progress=lambda stage, _detail, _fraction: stages.append(stage)
    )
    assert built == ["debian-12"] and not result.cached
    assert result.image.properties["stratus.recipe"] == key
    assert stages[-2:] == ["import", "done"]
    assert not list((tmp_path / "cache").glob("build-*/"))  # the work directory is removed
    assert builder.build("debian-12").cached


def test_an_unknown_image_name_lists_what_can_be_built(tmp_path: Path, fake_namespace: str) -> None:
    builder = ImageBuilder(
        FakeConnector(namespace=fake_namespace), cache_dir=tmp_path, mirror="http://x"
    )
    with pytest.raises(Invalid, match="images that can be built: debian-12"):
        builder.build("windows-95")


def test_the_key_covers_the_context_service(
    tmp_path: Path, fake_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = ImageBuilder(
        FakeConnector(namespace=fake_namespace), cache_dir=tmp_path, mirror="http://x"
    )
    recipe = builder.recipe("debian-12")
    key = builder.key(recipe)
    changed = tmp_path / "context.py"
    changed.write_bytes(images._context_service().read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(images, "_context_service", lambda: changed)
    assert builder.key(recipe) != key


def test_the_image_runs_the_context_module_as_stratus_context(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    for directory in (
        "etc/network",
        "etc/apt",
        "etc/ssh",
        "etc/systemd/system/multi-user.target.wants",
        "var/lib/dbus",
    ):
        (rootfs / directory).mkdir(parents=True)
    images._customise(rootfs, "http://deb.debian.org/debian", images.RECIPES["debian-12"])
    installed = rootfs / "usr/local/sbin/stratus-context"
    assert installed.read_bytes() == images._context_service().read_bytes()
    assert images._context_service().name == "context.py"
    assert installed.stat().st_mode & 0o777 == 0o755
    for unit in ("stratus-context.service", "stratus-context-final.service"):
        text = (rootfs / "etc/systemd/system" / unit).read_text()
        assert "ExecStart=/usr/local/sbin/stratus-context " in text
        link = rootfs / "etc/systemd/system/multi-user.target.wants" / unit
        assert link.readlink() == Path(f"/etc/systemd/system/{unit}")
