"""Settings: the only reader of environment variables and configuration files.

Values come, lowest priority first, from the defaults below, the TOML file (``STRATUS_CONFIG``,
by default ``/etc/stratuslab/config.toml`` for root and ``~/.config/stratuslab/config.toml``
otherwise) and ``STRATUS_<NAME>`` environment variables. A table in the file flattens onto the
field names: ``[lxd] bridge = "br1"`` sets ``lxd_bridge``. An unknown key is an error that names
the file and the key, so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from stratuslab.dn import normalized
from stratuslab.errors import Invalid

_LXD_SOCKETS = (
    "/var/lib/lxd/unix.socket",
    "/var/snap/lxd/common/lxd/unix.socket",
    "/var/lib/incus/unix.socket",
)
# Instance names are <prefix>-<run>-<node>-<index>, one DNS label of at most 63 characters:
# 20 for the prefix, 8 for the run, 20 for the node (docs/modules.md), 5 for the index.
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, validated once when loaded."""

    config_file: Path
    data_dir: Path
    cache_dir: Path
    database_url: str
    user: str
    credentials_file: Path  # the CLI's logins, one per server URL (mode 0600, see cli/credfile.py)
    instance_prefix: str = "inst"
    lxd_endpoint: str = ""
    lxd_bridge: str = "stratusbr0"
    lxd_subnet: str = "10.210.0.1/24"
    lxd_pool: str = "stratus"
    lxd_pool_size_gib: int = 30
    lxd_profile: str = "stratus"
    debian_mirror: str = "http://deb.debian.org/debian"
    server_url: str = ""  # empty: the local server, started on demand
    server_host: str = "127.0.0.1"
    server_port: int = 8421
    token: str = ""  # empty: read from data_dir/api-token, which the local server writes
    report_grace_s: int = 90  # after an abort, how long to wait for nodes' reports
    max_run_instances: int = 10_000  # node instances in one run
    # Several server processes on one PostgreSQL (deploy/claims.py): how long a claim on a
    # run's work lasts unless renewed (renewed at a third of it); a process whose heartbeat is
    # older than this is taken for dead and its runs are carried on by another.
    claim_lease_s: int = 60
    # Whether this server shares its ports with the other server processes of its store
    # (SO_REUSEPORT), so that nodes keep one URL and a survivor answers when one process dies:
    # for several processes on one PostgreSQL, and asked for, since any other server of this
    # user binding the same port would then share it too.
    server_share_ports: bool = False
    # How long a cloud may stop answering before the node instances whose machines are there
    # are lost and their runs abort (deploy/silence.py).
    cloud_silence_s: int = 60
    # Where nodes reach us, over TLS with the site certificate (cloud/sitecert.py); empty:
    # https://<bridge gateway>:<server_port>.
    agent_server_url: str = ""
    # HTTPS for users (docs/architecture.md, "Who is calling"): with a certificate and key the
    # server also listens on tls_port; with client CAs, a registered certificate logs a user in.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_host: str = "0.0.0.0"  # users come from other machines  # noqa: S104
    tls_port: int = 8443
    tls_client_ca_file: str = ""  # the CAs whose user certificates the site trusts (a bundle)
    tls_allow_proxies: bool = False  # RFC 3820 proxy certificates of those users, too
    # Continuous verification (verify/): where its mail goes out, and what its links point at.
    smtp_host: str = ""  # empty: mail notifications wait in the outbox until one is set
    smtp_port: int = 25
    smtp_starttls: bool = False  # STARTTLS before logging in (port 587 usually)
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = "stratus@localhost"
    public_url: str = ""  # the server's URL as people reach it (links); empty: the local one
    watch_min_every_s: int = 10  # the shortest polling interval a watch may ask for
    # Whether users' watches may name the site's private addresses (verify/addresses.py).
    watch_private_addresses: bool = False
    # Images (cloud/snapshots.py, cloud/importer.py): snapshots an instance may hold, the
    # largest download an import without an entry may make, and whether users' imports may
    # make the server reach the site's private addresses (administrators' always may).
    max_snapshots: int = 32
    image_import_max_bytes: int = 8 << 30
    image_import_private_addresses: bool = False
    # The site's image trust policy (cloud/marketplace/policy.py), decided at every instance
    # start and every run's creation. The defaults start what starts today.
    policy_unsigned: str = "allow"  # images no Marketplace entry endorses: allow or refuse
    policy_expired: str = "refuse"  # entries past their valid date: refuse or allow
    policy_site_images: str = "allow"  # base images this site built: count as endorsed
    policy_trust_store: str = ""  # CAs an endorser's chain must reach: a PEM bundle or a folder
    policy_crls: tuple[str, ...] = ()  # revocation lists (PEM or DER files) of those CAs
    policy_endorsers_allow: tuple[str, ...] = ()  # e-mail addresses or DNs; empty: anyone
    policy_endorsers_deny: tuple[str, ...] = ()
    policy_identifiers_allow: tuple[str, ...] = ()  # Marketplace identifiers
    policy_identifiers_deny: tuple[str, ...] = ()
    policy_checksums_allow: tuple[str, ...] = ()  # MD5, SHA-1, SHA-256 or SHA-512, hex
    policy_checksums_deny: tuple[str, ...] = ()
    marketplace_max_entries: int = 10_000  # Marketplace entries one user may upload (kept forever)
    debug: bool = False

    @property
    def local_server_url(self) -> str:
        return f"http://{self.server_host}:{self.server_port}"

    @property
    def bridge_gateway(self) -> str:
        return str(ipaddress.ip_interface(self.lxd_subnet).ip)

    @property
    def agent_url(self) -> str:
        """Where node agents reach the server: the bridge's address, seen from the instances,
        where the server listens with TLS (the loopback API stays plain HTTP)."""
        return self.agent_server_url or f"https://{self.bridge_gateway}:{self.server_port}"

    @property
    def links_url(self) -> str:
        """The server's URL in what people are sent (mail, webhooks, commit statuses)."""
        return (self.public_url or self.local_server_url).rstrip("/")

    @property
    def git_cache_dir(self) -> Path:
        """The clones of watched repositories, fetched incrementally (verify/git.py)."""
        return self.cache_dir / "git"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def tls_dir(self) -> Path:
        """The site CA and the server certificate nodes are told to trust (cloud/sitecert.py)."""
        return self.data_dir / "tls"

    @property
    def imports_dir(self) -> Path:
        """Image downloads under way, kept until complete so that a cut-off one resumes."""
        return self.data_dir / "imports"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "api-token"

    @property
    def database_path(self) -> Path | None:
        """The SQLite file, when the store is SQLite."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None

    def with_overrides(self, **values: Any) -> Settings:
        return _validated(replace(self, **values))


def load(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from the defaults, the configuration file and the environment."""
    env = dict(os.environ if environ is None else environ)
    root = os.geteuid() == 0
    home = Path(env.get("HOME", "/root"))
    config_file = Path(
        env.get("STRATUS_CONFIG")
        or ("/etc/stratuslab/config.toml" if root else home / ".config/stratuslab/config.toml")
    )
    values: dict[str, Any] = {}
    if config_file.exists():
        values.update(_read_file(config_file))
    for field in fields(Settings):
        key = f"STRATUS_{field.name.upper()}"
        if key in env and field.name != "config_file":
            values[field.name] = env[key]
    data_dir = Path(
        values.pop("data_dir", None)
        or ("/var/lib/stratuslab" if root else home / ".local/share/stratuslab")
    )
    cache_dir = Path(
        values.pop("cache_dir", None)
        or ("/var/cache/stratuslab" if root else home / ".cache/stratuslab")
    )
    # The user's own file, root's too: a login is a person's, not the site's.
    credentials_file = Path(
        values.pop("credentials_file", None) or home / ".config/stratuslab/credentials.toml"
    )
    settings = Settings(
        config_file=config_file,
        data_dir=data_dir,
        cache_dir=cache_dir,
        database_url=str(
            values.pop("database_url", None) or f"sqlite:///{data_dir / 'stratus.db'}"
        ),
        user=str(values.pop("user", None) or env.get("SUDO_USER") or getpass.getuser()),
        credentials_file=credentials_file,
    )
    return _validated(replace(settings, **_coerced(values, config_file)))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Invalid(f"{path}: cannot read configuration: {exc}") from exc
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}_{sub}"] = subvalue
        else:
            flat[key] = value
    known = {f.name for f in fields(Settings)} - {"config_file"}
    for key in flat:
        if key not in known:
            raise Invalid(
                f"{path}: unknown setting {key!r}", hint=f"known: {', '.join(sorted(known))}"
            )
    return flat


def _coerced(values: dict[str, Any], source: Path) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind = types[key]
        try:
            if kind == "bool":
                out[key] = (
                    value
                    if isinstance(value, bool)
                    else str(value).lower() in {"1", "true", "yes", "on"}
                )
            elif kind == "int":
                out[key] = int(value)
            elif kind == "tuple[str, ...]":
                out[key] = _listed(value)
            else:
                out[key] = str(value)
        except ValueError as exc:
            raise Invalid(f"setting {key!r} ({source} or STRATUS_{key.upper()}): {exc}") from exc
    return out


def _listed(value: Any) -> tuple[str, ...]:
    """A list setting: a TOML array, or (from the environment) items one per line or
    separated by ``;`` (DNs hold commas)."""
    if isinstance(value, list | tuple):
        items = [str(item) for item in value]
    else:
        items = re.split(r"[;\n]", str(value))
    return tuple(item.strip() for item in items if item.strip())


def _endorser(text: str) -> bool:
    if "=" in text:
        normalized(text)  # Invalid, saying what is wrong with the DN
        return True
    return re.fullmatch(r"[^@\s/=,]+@[^@\s/=,]+", text) is not None


def _identifier(text: str) -> bool:
    return re.fullmatch(r"[A-P][A-Za-z0-9_-]{26}", text) is not None


def _checksum(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]+", text) is not None and len(text) in (32, 40, 64, 128)


_POLICY_LISTS = {
    "policy_endorsers": (_endorser, "an e-mail address or a certificate DN"),
    "policy_identifiers": (_identifier, "a 27-character Marketplace identifier"),
    "policy_checksums": (_checksum, "the hex digest of MD5, SHA-1, SHA-256 or SHA-512"),
}
MAX_POLICY_ITEMS = 10_000


def _validated_policy(settings: Settings) -> None:
    for name in ("policy_unsigned", "policy_expired", "policy_site_images"):
        if getattr(settings, name) not in ("allow", "refuse"):
            raise Invalid(f"setting {name}: allow or refuse, not {getattr(settings, name)!r}")
    if settings.policy_crls and not settings.policy_trust_store:
        raise Invalid(
            "setting policy_crls: revocation lists are verified with the trust store's CAs",
            hint="set policy_trust_store too",
        )
    for prefix, (valid, what) in _POLICY_LISTS.items():
        for which in ("allow", "deny"):
            name = f"{prefix}_{which}"
            items = getattr(settings, name)
            if len(items) > MAX_POLICY_ITEMS:
                raise Invalid(f"setting {name}: at most {MAX_POLICY_ITEMS} items")
            for item in items:
                try:
                    if not valid(item):
                        raise Invalid(f"{item[:140]!r} is not {what}")
                except Invalid as exc:
                    raise Invalid(f"setting {name}: {exc.message}") from None


def _validated(settings: Settings) -> Settings:
    try:
        subnet = ipaddress.ip_interface(settings.lxd_subnet)
    except ValueError as exc:
        raise Invalid(
            f"setting lxd_subnet: {exc}", hint="write it as GATEWAY/PREFIX, e.g. 10.210.0.1/24"
        ) from exc
    if subnet.version != 4 or subnet.ip == subnet.network.network_address:
        raise Invalid(
            f"setting lxd_subnet: {settings.lxd_subnet} "
            "must be an IPv4 gateway address with a prefix"
        )
    if not _NAME.match(settings.instance_prefix):
        raise Invalid(
            f"setting instance_prefix: {settings.instance_prefix!r} "
            "must be a lowercase hostname part of at most 20 characters"
        )
    if not 1 <= settings.max_run_instances <= 1_000_000:
        raise Invalid("setting max_run_instances: between 1 and 1000000")
    if not 0 <= settings.report_grace_s <= 86400:
        raise Invalid("setting report_grace_s: between 0 and 86400 seconds")
    if not 3 <= settings.claim_lease_s <= 3600:
        raise Invalid("setting claim_lease_s: between 3 and 3600 seconds")
    if not 1 <= settings.cloud_silence_s <= 86400:
        raise Invalid("setting cloud_silence_s: between 1 and 86400 seconds")
    if settings.server_share_ports and settings.database_url.startswith("sqlite"):
        raise Invalid(
            "setting server_share_ports: only for several server processes on one PostgreSQL",
            hint="on SQLite one server process serves the store",
        )
    if settings.lxd_pool_size_gib < 5:
        raise Invalid("setting lxd_pool_size_gib: at least 5 GiB is needed for the base image")
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise Invalid("settings tls_cert_file and tls_key_file: give both, or neither")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        raise Invalid("setting tls_client_ca_file: client certificates need tls_cert_file too")
    if not 1 <= settings.smtp_port <= 65535:
        raise Invalid("setting smtp_port: a TCP port, 1 to 65535")
    if not 1 <= settings.watch_min_every_s <= 86400:
        raise Invalid("setting watch_min_every_s: between 1 and 86400 seconds")
    if not 1 <= settings.max_snapshots <= 1000:
        raise Invalid("setting max_snapshots: between 1 and 1000")
    if not 1 << 20 <= settings.image_import_max_bytes <= 1 << 40:
        raise Invalid("setting image_import_max_bytes: between 1 MiB and 1 TiB, in bytes")
    if not 1 <= settings.marketplace_max_entries <= 10_000_000:
        raise Invalid("setting marketplace_max_entries: between 1 and 10000000")
    if not 1 <= settings.tls_port <= 65535:
        raise Invalid("setting tls_port: a TCP port, 1 to 65535")
    if not settings.database_url.startswith(("sqlite:///", "postgresql")):
        raise Invalid(
            f"setting database_url: {settings.database_url!r} is neither sqlite:/// nor postgresql"
        )
    if settings.agent_server_url and not settings.agent_server_url.startswith("https://"):
        raise Invalid(
            f"setting agent_server_url: {settings.agent_server_url!r} must be an https:// URL",
            hint="nodes send their token to it, and trust it by the site certificate only",
        )
    _validated_policy(settings)
    if not settings.lxd_endpoint:
        found = next((s for s in _LXD_SOCKETS if Path(s).exists()), _LXD_SOCKETS[0])
        settings = replace(settings, lxd_endpoint=f"unix://{found}")
    return settings
