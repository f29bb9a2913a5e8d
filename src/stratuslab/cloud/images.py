"""Base images, built locally with debootstrap and cached by content.

There is no image server to download from: a base image is built from the Debian mirror. Its
cache key is a digest of everything that goes into it (the recipe, the mirror, the files this
package adds to the image: ``imagefiles/`` and the context service, ``cloud/guest/context.py``),
recorded as the image property ``stratus.recipe``. A build whose
key matches the image already imported returns at once; any change to the inputs builds anew.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml

from stratuslab import proc
from stratuslab.cloud.base import Connector, Image
from stratuslab.cloud.types import Capability
from stratuslab.errors import Invalid, NotFound

BUILDER_VERSION = "1"
Progress = Callable[[str, str, float | None], None]


@dataclass(frozen=True)
class Recipe:
    """How to build one base image."""

    name: str
    description: str
    suite: str
    os: str
    release: str
    include: tuple[str, ...]
    variant: str = "minbase"


RECIPES: dict[str, Recipe] = {
    "debian-12": Recipe(
        name="debian-12",
        description="Debian 12 (bookworm), built by StratusLab",
        suite="bookworm",
        os="debian",
        release="12",
        include=(
            "systemd-sysv",
            "dbus",
            "iproute2",
            "ifupdown",
            "isc-dhcp-client",
            "netbase",
            "iputils-ping",
            "procps",
            "less",
            "python3",
            "curl",
            "ca-certificates",
            "openssh-server",
        ),
    ),
}

# What debootstrap says, in order, and roughly how far along the build each step is.
_STEPS = (
    ("I: Retrieving InRelease", "fetching the package index", 0.02),
    ("I: Retrieving ", "downloading packages", 0.05),
    ("I: Validating ", "checking packages", 0.30),
    ("I: Extracting ", "extracting the base system", 0.35),
    ("I: Installing core packages", "installing core packages", 0.45),
    ("I: Unpacking ", "unpacking packages", 0.55),
    ("I: Configuring ", "configuring packages", 0.75),
    ("I: Base system installed", "base system installed", 0.85),
)


@dataclass(frozen=True)
class BuildResult:
    image: Image
    cached: bool
    seconds: float
    key: str


class ImageBuilder:
    """Builds base images and imports them through a connector that can import images."""

    def __init__(self, connector: Connector, *, cache_dir: Path, mirror: str) -> None:
        self.connector = connector
        self.cache_dir = cache_dir
        self.mirror = mirror.rstrip("/")

    def recipe(self, name: str) -> Recipe:
        try:
            return RECIPES[name]
        except KeyError:
            raise Invalid(
                f"no recipe for an image called {name!r}",
                hint=f"images that can be built: {', '.join(sorted(RECIPES))}",
            ) from None

    def key(self, recipe: Recipe) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps([BUILDER_VERSION, asdict(recipe), self.mirror]).encode())
        for name, path in sorted(_added_files().items()):
            digest.update(name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    def cached(self, name: str) -> Image | None:
        """The imported image when it matches its recipe's current key, else None."""
        recipe = self.recipe(name)
        try:
            image = self.connector.get_image(name)
        except NotFound:
            return None
        return image if image.properties.get("stratus.recipe") == self.key(recipe) else None

    def build(
        self, name: str, *, force: bool = False, progress: Progress | None = None
    ) -> BuildResult:
        """Build ``name`` unless an image with the same key is already there."""
        started = time.monotonic()
        report = progress or (lambda _stage, _detail, _fraction: None)
        recipe = self.recipe(name)
        self.connector.require(Capability.IMPORT_IMAGE)
        key = self.key(recipe)
        if not force and (image := self.cached(name)) is not None:
            return BuildResult(image, True, time.monotonic() - started, key)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.cache_dir / f"build-{name}.lock"):
            if not force and (image := self.cached(name)) is not None:
                return BuildResult(image, True, time.monotonic() - started, key)
            work = self.cache_dir / f"build-{name}-{key[:12]}"
            try:
                archive = self._build_archive(recipe, key, work, report)
                report("import", "importing into the cloud", 0.95)
                image = self.connector.import_image(archive, name=name, sha256=_sha256(archive))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        report("done", f"{name} ready", 1.0)
        return BuildResult(image, False, time.monotonic() - started, key)

    # -- steps ----------------------------------------------------------------------------

    def _build_archive(self, recipe: Recipe, key: str, work: Path, report: Progress) -> Path:
        shutil.rmtree(work, ignore_errors=True)
        rootfs = work / "rootfs"
        rootfs.mkdir(parents=True)
        report("debootstrap", f"debootstrap {recipe.suite} from {self.mirror}", 0.0)
        packages = self.cache_dir / "debootstrap-packages"
        packages.mkdir(exist_ok=True)
        proc.run(
            [
                "debootstrap",
                f"--variant={recipe.variant}",
                f"--include={','.join(recipe.include)}",
                f"--cache-dir={packages}",
                recipe.suite,
                str(rootfs),
                self.mirror,
            ],
            on_line=lambda line: _debootstrap_progress(line, report),
            hint="is the Debian mirror reachable? see the configuration setting debian_mirror",
        )
        report("customise", "adding networking, ssh and contextualization", 0.88)
        _customise(rootfs, self.mirror, recipe)
        _write_metadata(work, recipe, key)
        report("pack", "packing the image", 0.90)
        archive = work / "image.tar"
        proc.run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "-C",
                str(work),
                "-cf",
                str(archive),
                "metadata.yaml",
                "templates",
                "rootfs",
            ]
        )
        return archive


def _debootstrap_progress(line: str, report: Progress) -> None:
    for prefix, stage, fraction in _STEPS:
        if line.startswith(prefix):
            report("debootstrap", f"{stage}: {line[3:].strip()}", fraction)
            return


def _customise(rootfs: Path, mirror: str, recipe: Recipe) -> None:
    files = _image_files()
    etc = rootfs / "etc"
    (etc / "network/interfaces").write_text((files / "interfaces").read_text())
    security = mirror.rsplit("/", 1)[0] + "/debian-security"
    (etc / "apt/sources.list").write_text(
        f"deb {mirror} {recipe.suite} main\n"
        f"deb {mirror} {recipe.suite}-updates main\n"
        f"deb {security} {recipe.suite}-security main\n"
    )
    (etc / "resolv.conf").write_text("")  # DHCP writes it; the build host's must not leak in
    (etc / "hostname").write_text("localhost\n")
    (etc / "machine-id").write_text("")  # systemd makes a fresh one at first boot
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in etc.glob("ssh/ssh_host_*"):
        key.unlink()
    _install(files / "ssh-hostkeys.conf", etc / "systemd/system/ssh.service.d/hostkeys.conf")
    _install(_context_service(), rootfs / "usr/local/sbin/stratus-context", mode=0o755)
    wants = etc / "systemd/system/multi-user.target.wants"
    for unit in ("stratus-context.service", "stratus-context-final.service"):
        _install(files / unit, etc / "systemd/system" / unit)
        (wants / unit).unlink(missing_ok=True)
        (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    # binfmt_misc cannot be mounted in a container: the unit would only fail at every boot.
    masked = etc / "systemd/system/systemd-binfmt.service"
    masked.unlink(missing_ok=True)
    masked.symlink_to("/dev/null")
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()


def _write_metadata(work: Path, recipe: Recipe, key: str) -> None:
    files = _image_files()
    templates = work / "templates"
    templates.mkdir()
    for name in ("hostname.tpl", "hosts.tpl"):
        shutil.copyfile(files / name, templates / name)
    metadata = {
        "architecture": "x86_64",
        "creation_date": int(time.time()),
        "properties": {
            "description": recipe.description,
            "os": recipe.os,
            "release": recipe.release,
            "stratus.name": recipe.name,
            "stratus.recipe": key,
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
            "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
        },
    }
    (work / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))


def _install(source: Path, target: Path, *, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def _image_files() -> Path:
    return Path(str(resources.files("stratuslab.cloud") / "imagefiles"))


def _context_service() -> Path:
    """The module the image runs as /usr/local/sbin/stratus-context (standard library only)."""
    return Path(str(resources.files("stratuslab.cloud.guest") / "context.py"))


def _added_files() -> dict[str, Path]:
    """Everything this package adds to an image, by a name unique among them."""
    added = {path.name: path for path in _image_files().iterdir()}
    added["stratus-context"] = _context_service()
    return added


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One build of an image at a time on this machine."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
