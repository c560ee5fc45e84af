#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are on PATH: the tests run a real Prometheus and
# check the rules with promtool. Debian's `prometheus` package brings both.
#
# - Both found: nothing to do.
# - Missing and we are root: `apt-get update && apt-get install -y --no-install-recommends prometheus`
#   (no recommends: the node exporter and the rest are not needed). The package's service is
#   not started here (no init system in a container or on CI); the tests start their own.
# - Missing and not root: a message saying what to install. Under CI=true it fails (the
#   Prometheus tests may not skip there); elsewhere it only warns and the tests that need
#   Prometheus skip, saying why.
set -euo pipefail
# shellcheck source=../apt-install.sh
source "$(dirname "$0")/../apt-install.sh"

have() { command -v "$1" > /dev/null 2>&1; }

if have prometheus && have promtool; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && have apt-get; then
  echo "infra/prometheus/install.sh: installing Debian's prometheus package (prometheus, promtool)..." >&2
  apt_install prometheus
  if have prometheus && have promtool; then
    echo "infra/prometheus/install.sh: $(prometheus --version 2>&1 | head -n 1)" >&2
    exit 0
  fi
  echo "infra/prometheus/install.sh: the prometheus package installed, but prometheus/promtool are still not on PATH" >&2
  exit 1
fi
msg="prometheus and promtool are missing: install Debian's prometheus package (sudo apt-get install prometheus), or put both on PATH"
if [ "${CI:-}" = true ]; then
  echo "infra/prometheus/install.sh: error: $msg (CI=true: the Prometheus tests may not skip)" >&2
  exit 1
fi
echo "infra/prometheus/install.sh: warning: $msg; the tests that need them will skip" >&2
