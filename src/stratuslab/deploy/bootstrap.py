"""The user-data that turns a pristine instance into a node of a run.

It is a plain shell script, so that it works through cloud-init on any cloud as well as through
the base image's context service: it writes the agent's configuration (server URL, run, node
instance, token, and the site CA's certificate, the only one the node trusts), fetches the
agent zipapp from the server over HTTPS checked against that CA, runs it only if its SHA-256 is
the one this server built (the agent runs as root with the node's token: a neighbour on the
bridge, a proxy, a cache or a server of another version must not hand it other code), and lets
it install itself. A download that fails, or brings other bytes, is tried again, once a second,
for two minutes.
"""

from __future__ import annotations

import json
import re
import shlex

from stratuslab.deploy import agent_bundle
from stratuslab.errors import Invalid

ATTEMPTS = 120  # downloads, a second apart
CA_PATH = "/etc/stratus/server-ca.pem"  # for curl, and for recipes that call the server
_PEM = re.compile(
    r"^(-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?)+$"
)


def user_data(*, server: str, ca: str, run_id: str, node_instance: str, token: str) -> str:
    return script(
        server=server,
        ca=ca,
        run_id=run_id,
        node_instance=node_instance,
        token=token,
        sha256=agent_bundle.sha256(),
    )


def script(
    *,
    server: str,
    ca: str,
    run_id: str,
    node_instance: str,
    token: str,
    sha256: str,
    root: str = "",
    attempts: int = ATTEMPTS,
) -> str:
    """The bootstrap for a zipapp whose digest is ``sha256``. ``root`` puts the node's files
    under another directory and ``attempts`` bounds the downloads: both for tests. A server
    that is not ``https://`` or a ``ca`` that is not PEM certificates is refused: the node
    would send its token in clear, or trust nobody."""
    if not server.startswith("https://"):
        raise Invalid(f"node bootstrap: the server URL {server!r} is not https://")
    ca = ca.strip() + "\n"
    if not _PEM.match(ca):
        raise Invalid("node bootstrap: the site CA is not a PEM certificate")
    config = json.dumps(
        {"server": server, "run": run_id, "node_instance": node_instance, "token": token, "ca": ca}
    )
    url = shlex.quote(f"{server.rstrip('/')}/agent/{agent_bundle.NAME}")
    conf = shlex.quote(f"{root}/etc/stratus/agent.conf")
    ca_file = shlex.quote(f"{root}{CA_PATH}")
    agent = shlex.quote(f"{root}{agent_bundle.NODE_PATH}")
    directories = " ".join(shlex.quote(f"{root}{d}") for d in ("/etc/stratus", "/opt/stratus"))
    return f"""#!/bin/sh
# StratusLab node bootstrap: run {run_id}, node instance {node_instance}
set -e
umask 077
mkdir -p {directories}
cat > {conf} <<'STRATUS_AGENT_CONF'
{config}
STRATUS_AGENT_CONF
cat > {ca_file} <<'STRATUS_SERVER_CA'
{ca.rstrip()}
STRATUS_SERVER_CA
chmod 0644 {ca_file}
url={url}
ca={ca_file}
agent={agent}
expected={sha256}
fetch() {{
  curl -fsS --proto =https --max-time 10 --cacert "$ca" -o "$agent.part" "$url" || return 1
  got=$(sha256sum "$agent.part") || return 1
  got=${{got%% *}}
  [ "$got" = "$expected" ] && return 0
  echo "the agent from $url has SHA-256 $got, not $expected: not run" >&2
  rm -f "$agent.part"
  return 1
}}
attempt=0
until fetch; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge {attempts} ]; then
    echo "cannot fetch the agent (SHA-256 $expected) from $url" >&2
    exit 1
  fi
  sleep 1
done
chmod 0755 "$agent.part"
mv -f "$agent.part" "$agent"
exec python3 "$agent" install
"""
