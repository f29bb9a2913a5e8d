#!/usr/bin/env bash
# Set up everything StratusLab needs on a Debian 12 machine, as root, idempotently:
# Debian packages, a virtual environment with the pinned Python dependencies, PostgreSQL started
# with a `stratus` role (for a site's server, and for the tests), LXD started and initialised
# (`stratus cloud init`), and the debian-12 base image (`stratus image build`).
# Each step checks first and does nothing when its work is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup needs root (LXD, debootstrap and apt-get do)" >&2
  exit 77
fi

PACKAGES=(lxd lxd-client btrfs-progs debootstrap nftables iptables squashfs-tools zstd
          python3 python3-venv python3-dev openssh-client curl ca-certificates make git
          postgresql iproute2)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
else
  say "Debian packages: present"
fi

PYTHON=/usr/bin/python3
stamp_wanted=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$stamp_wanted" ]; then
  say "creating the virtual environment in .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  echo "$stamp_wanted" > .venv/.stamp
else
  say "virtual environment: up to date"
fi

cluster=$(pg_lsclusters -h | head -n 1)
if [ -z "$cluster" ]; then
  echo "PostgreSQL has no cluster (pg_lsclusters is empty)" >&2
  exit 1
fi
read -r pg_version pg_name _ pg_status _ <<<"$cluster"
if [ "$pg_status" != "online" ]; then
  say "starting PostgreSQL $pg_version/$pg_name"
  if [ -d /run/systemd/system ]; then
    systemctl start "postgresql@$pg_version-$pg_name"
  else
    pg_ctlcluster "$pg_version" "$pg_name" start
  fi
else
  say "PostgreSQL $pg_version/$pg_name: running"
fi
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stratus') THEN
    CREATE ROLE stratus LOGIN CREATEDB PASSWORD 'stratus';
  END IF;
END $$;
SQL

say "local cloud"
.venv/bin/stratus cloud init
say "base image"
.venv/bin/stratus image build debian-12
