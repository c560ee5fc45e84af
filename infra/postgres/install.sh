#!/usr/bin/env bash
# Make sure PostgreSQL's server programs (initdb, pg_ctl, postgres) are installed: the
# tests and the snapshot benchmark run a throwaway server (infra/postgres/server.py) as
# the DuckLake catalog that several snapshot writers share. Debian's `postgresql`
# package brings them under /usr/lib/postgresql/<version>/bin (not on PATH).
#
# - Found (on PATH or under /usr/lib/postgresql): nothing to do.
# - Missing and we are root: `apt-get update && apt-get install -y --no-install-recommends postgresql`.
#   The package's own cluster is not started (no init system in a container or on CI);
#   server.py starts its own in a temporary directory.
# - Missing and not root: a message saying what to install. Under CI=true it fails (the
#   PostgreSQL tests may not skip there); elsewhere it only warns and those tests skip.
set -euo pipefail
# shellcheck source=../apt-install.sh
source "$(dirname "$0")/../apt-install.sh"

found() {
  command -v initdb > /dev/null 2>&1 && command -v pg_ctl > /dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' > /dev/null 2>&1
}

if found; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
  echo "infra/postgres/install.sh: installing Debian's postgresql package (initdb, pg_ctl, postgres)..." >&2
  apt_install postgresql
  if found; then
    echo "infra/postgres/install.sh: $(ls -d /usr/lib/postgresql/*/bin | tail -n 1)" >&2
    exit 0
  fi
  echo "infra/postgres/install.sh: the postgresql package installed, but initdb/pg_ctl are still not found" >&2
  exit 1
fi
msg="PostgreSQL's server programs are missing: install Debian's postgresql package (sudo apt-get install postgresql)"
if [ "${CI:-}" = true ]; then
  echo "infra/postgres/install.sh: error: $msg (CI=true: the PostgreSQL tests may not skip)" >&2
  exit 1
fi
echo "infra/postgres/install.sh: warning: $msg; the tests that need it will skip" >&2
exit 3
