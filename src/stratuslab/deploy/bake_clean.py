"""What a bake takes out of an instance before it becomes an image: whatever must not be
shared by the instances started from it, or would stop them from becoming nodes of their own.

- the machine's identity: ``/etc/machine-id`` emptied (systemd makes one at first boot, as the
  base image has it) and ``/var/lib/dbus/machine-id`` removed; the ssh host keys (the base
  image's sshd unit makes them at first boot, ``cloud/imagefiles/ssh-hostkeys.conf``);
- the node it was: the agent's configuration and token (``/etc/stratus``), its zipapp, state,
  logs, reports, tools and systemd unit (the bootstrap installs them again at each new
  instance's first boot, ``deploy/bootstrap.py``), and the context service's once-per-instance
  markers (``cloud/guest/context.py``), without which the new instance would never run its
  user-data, hence never its bootstrap;
- what the install left lying: logs, apt's lists and caches, root's shell history, temporary
  files.

It runs as one shell script through the instance service's exec, as root, after the agent has
done the install steps. The agent itself is stopped first, so that nothing writes its files
again.
"""

from __future__ import annotations

import shlex

from stratuslab.deploy.agent.tools import TOOL_NAMES

_TOOLS = " ".join(shlex.quote(f"/usr/local/bin/{name}") for name in TOOL_NAMES)

SCRIPT = f"""set -u
systemctl disable --now stratus-agent.service >/dev/null 2>&1 || true
if [ -s /var/lib/stratus-agent/agent.pid ]; then
  kill "$(cat /var/lib/stratus-agent/agent.pid)" 2>/dev/null || true
fi
rm -f /etc/systemd/system/stratus-agent.service /etc/systemd/system/*.wants/stratus-agent.service
systemctl daemon-reload >/dev/null 2>&1 || true
rm -rf /etc/stratus /opt/stratus /var/lib/stratus-agent /var/log/stratus-agent /var/tmp/slipstream
rm -f {_TOOLS}
rm -rf /var/lib/stratus-context
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
apt-get clean >/dev/null 2>&1 || true
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
mkdir -p /var/lib/apt/lists/partial
find /var/log -type f \\( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \\) -delete
find /var/log -type f -exec truncate -s 0 {{}} +
rm -rf /var/log/journal/*
rm -f /root/.bash_history
find /tmp /var/tmp -mindepth 1 -delete 2>/dev/null || true
sync
echo cleaned
"""
COMMAND = ("/bin/sh", "-c", SCRIPT)
DONE = "cleaned"  # the script's last line, when it ran to its end


def installed_command(names: list[str]) -> tuple[str, ...]:
    """``dpkg-query`` for the versions of ``names`` (a name dpkg does not know is left out)."""
    query = "dpkg-query -W -f '${Package}\\t${Version}\\n' " + " ".join(
        shlex.quote(name) for name in names
    )
    return ("/bin/sh", "-c", f"{query} 2>/dev/null || true")
