"""The user-data that turns a pristine instance into a node of a run.

It is a plain shell script, so that it works through cloud-init on any cloud as well as through
the base image's context service: it writes the agent's configuration (server URL, run, node
instance, token), fetches the agent from the server and lets it install itself.
"""

from __future__ import annotations

import json
import shlex


def user_data(*, server: str, run_id: str, node_instance: str, token: str) -> str:
    config = json.dumps(
        {"server": server, "run": run_id, "node_instance": node_instance, "token": token}
    )
    agent_url = shlex.quote(f"{server.rstrip('/')}/agent/stratus_agent.py")
    return f"""#!/bin/sh
# StratusLab node bootstrap: run {run_id}, node instance {node_instance}
set -e
umask 077
mkdir -p /etc/stratus /opt/stratus
cat > /etc/stratus/agent.conf <<'STRATUS_AGENT_CONF'
{config}
STRATUS_AGENT_CONF
attempt=0
until curl -fsS --max-time 10 -o /opt/stratus/stratus_agent.py {agent_url}; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 120 ] || {{ echo "cannot fetch the agent from {agent_url}" >&2; exit 1; }}
  sleep 1
done
chmod 0755 /opt/stratus/stratus_agent.py
exec python3 /opt/stratus/stratus_agent.py install
"""
