#!/bin/sh
# Entry point of a flow pod of the StatefulSet (infra/k8s/flow.yaml): works out this
# process's place in the Bytewax cluster, then runs `omni-ledger "$@"`.
#
# A StatefulSet pod is named <statefulset>-<ordinal> (omni-ledger-flow-0, -1, ...) and the
# headless Service gives each one a stable DNS name, <pod>.<service>. So:
#   OMNI_LEDGER_RUNTIME_PROCESS_ID = the ordinal (the hostname's numeric suffix)
#   OMNI_LEDGER_RUNTIME_ADDRESSES  = <statefulset>-0.<service>:<port>;...;<statefulset>-(N-1).<service>:<port>
#   OMNI_LEDGER_SNAPSHOTS_WRITERS  = N, one snapshot writer per process (unless already set)
# omni_ledger/config.py reads the three like any OMNI_LEDGER_* setting.
#
# Set by the pod spec:
#   CLUSTER_SIZE     the number of processes: must equal the StatefulSet's replicas
#   CLUSTER_SERVICE  the headless Service (its publishNotReadyAddresses lets peers resolve
#                    each other before any is ready: Bytewax connects all processes first)
#   CLUSTER_PORT     the Bytewax peer port (default 2101)
#   POD_NAME         the pod's name (downward API; default: the hostname)
#   CLUSTER_DNS_WAIT seconds to wait for every peer's name to resolve (default 120): Bytewax
#                    retries a peer it cannot reach every second, but this pod's own name
#                    must resolve before `run` starts (it exits 2 otherwise)
#
# Names are relative to the pod's namespace (resolved through the pod's DNS search list),
# so the manifests work in any namespace and cluster domain.
set -eu

say() { echo "flow-entrypoint: $*" >&2; }

pod="${POD_NAME:-$(hostname)}"
size="${CLUSTER_SIZE:?CLUSTER_SIZE (the StatefulSet replicas) is not set}"
service="${CLUSTER_SERVICE:?CLUSTER_SERVICE (the headless Service) is not set}"
port="${CLUSTER_PORT:-2101}"
ordinal="${pod##*-}"
statefulset="${pod%-*}"

case "$ordinal" in
  '' | *[!0-9]*) say "cannot read a process id from the pod name '$pod' (expected <statefulset>-<ordinal>)"; exit 2 ;;
esac
case "$size" in
  '' | *[!0-9]* | 0) say "CLUSTER_SIZE must be a positive integer, got '$size'"; exit 2 ;;
esac
if [ "$ordinal" -ge "$size" ]; then
  say "pod $pod has ordinal $ordinal but CLUSTER_SIZE is $size: set CLUSTER_SIZE to the StatefulSet's replicas"
  exit 2
fi

addresses=""
i=0
while [ "$i" -lt "$size" ]; do
  addresses="${addresses:+$addresses;}$statefulset-$i.$service:$port"
  i=$((i + 1))
done

export OMNI_LEDGER_RUNTIME_PROCESS_ID="$ordinal"
export OMNI_LEDGER_RUNTIME_ADDRESSES="$addresses"
export OMNI_LEDGER_SNAPSHOTS_WRITERS="${OMNI_LEDGER_SNAPSHOTS_WRITERS:-$size}"

# Wait (bounded) until every peer's name resolves: each pod's DNS record appears once it
# has an address, and pods of a Parallel StatefulSet start at about the same time.
wait_s="${CLUSTER_DNS_WAIT:-120}"
if [ "$wait_s" -gt 0 ] && command -v getent > /dev/null 2>&1; then
  i=0
  while [ "$i" -lt "$size" ]; do
    host="$statefulset-$i.$service"
    waited=0
    until getent hosts "$host" > /dev/null 2>&1; do
      if [ "$waited" -ge "$wait_s" ]; then
        say "$host does not resolve after ${wait_s}s; starting anyway (Bytewax retries the peer; an own name that does not resolve makes run exit 2 and the pod restart)"
        break
      fi
      sleep 1
      waited=$((waited + 1))
    done
    i=$((i + 1))
  done
fi

say "process $ordinal of $size, peers $addresses"
exec omni-ledger "$@"
