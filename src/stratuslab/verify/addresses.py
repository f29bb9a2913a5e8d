"""Where a watch may make the server reach: not the site's own private addresses.

A watch makes the server fetch from its repository URL and post to its webhook and forge URLs.
On a shared site, a user who names ``http://127.0.0.1:5432`` or another user's container
(``10.210.0.x``) makes the server a tool against what it can reach and they cannot. So, unless
the site allows it (``watch_private_addresses``) or the caller is an administrator, a URL whose
host is a loopback, private, link-local, shared, multicast, reserved or unspecified address, or
``localhost``, is refused when the watch is added.

Only addresses written in the URL are judged: a name is not resolved here (it may resolve
differently when the server connects), which is what a site that needs more puts a filtering
proxy in front of the server for.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from stratuslab.errors import Invalid

_SCP = re.compile(r"(?:[^@/]+@)?(?P<host>\[[^\]]+\]|[^:/]+):(?!//)")


def host_of(url: str) -> str:
    """The host a URL names (a scp-like ``user@host:path`` too), lowercased, without brackets."""
    if "://" not in url and (scp := _SCP.match(url)):
        host = scp.group("host")
    else:
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            return ""
    return host.strip("[]").lower().rstrip(".")


def is_private(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or an address that is not on the public Internet."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: not judged here (see the module)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def check_public(url: str, *, what: str, allowed: bool) -> None:
    """Refuse ``url`` when it names a private address and that is not ``allowed``."""
    host = host_of(url)
    if not allowed and host and is_private(host):
        raise Invalid(
            f"{what} {host!r} is a private address of this site: a watch may not make the "
            "server reach it",
            hint="ask an administrator (they may add it, or allow it: watch_private_addresses)",
        )
