#!/usr/bin/env bash
# `make stack`: the whole system on one machine — a local Kafka broker, the topics, the
# simulator producing into Kafka, the flow folding from Kafka into snapshots, the
# HTTP API and web console over them (confirms produced to Kafka), and Prometheus
# scraping the flow (/metrics on FLOW_METRICS_PORT, 9610) and the API (API_METRICS_PORT,
# 9611) with infra/prometheus/prometheus.yml: its rules, alerts and a UI on PROM_PORT (9090).
# Ctrl-C stops the producer and the flow cleanly (each publishes/flushes what it has),
# then Prometheus and the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RATE=${RATE:-2000}
SNAPSHOT_DIR=${SNAPSHOT_DIR:-var/stack/snapshots}
KAFKA_DIR=${KAFKA_DIR:-var/kafka}
FLOW_METRICS_PORT=${FLOW_METRICS_PORT:-9610}
API_METRICS_PORT=${API_METRICS_PORT:-9611}
PROM_PORT=${PROM_PORT:-9090}
PROM_DIR=${PROM_DIR:-var/stack/prometheus}

# The API promises over the sites the simulator moves stock in: its network, as a network file
# (first: a bad [simulator] network stops the stack before anything starts).
SIM_NETWORK=${SIM_NETWORK:-var/stack/network.toml}
"$BIN/omni-ledger" sim-network --out "$SIM_NETWORK"
export OMNI_LEDGER_SERVE_NETWORK=${OMNI_LEDGER_SERVE_NETWORK:-$SIM_NETWORK}

python3 infra/kafka/broker.py up --dir "$KAFKA_DIR"
eval "$(python3 infra/kafka/broker.py env --dir "$KAFKA_DIR")"
export OMNI_LEDGER_KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP_SERVERS"
"$BIN/omni-ledger" topics create
# A week of appointment capacity at the stores (idempotent: same ids, same counts).
"$BIN/omni-ledger" open-slots --bus kafka --days 7 > /dev/null

pids=()
stopped=0
stop() {
  trap - INT TERM
  [ "$stopped" = 1 ] && return
  stopped=1
  echo "stack: stopping the producer and the flow..." >&2
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${prom_pid:-}" ]; then kill -TERM "$prom_pid" 2>/dev/null || true; wait "$prom_pid" 2>/dev/null || true; fi
  python3 infra/kafka/broker.py down --dir "$KAFKA_DIR"
}
trap stop INT TERM

# Each child in its own session: Ctrl-C reaches only this script, which asks each child once.
setsid "$BIN/omni-ledger" produce --sim --rate "$RATE" > /dev/null &
pids+=($!)
setsid "$BIN/omni-ledger" run --source kafka --snapshot-dir "$SNAPSHOT_DIR" --metrics-port "$FLOW_METRICS_PORT" &
pids+=($!)
# The API: a write token for this session only, printed so the console can be used.
export OMNI_LEDGER_SERVE_WRITE_TOKENS=${OMNI_LEDGER_SERVE_WRITE_TOKENS:-stack-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}
PORT=${PORT:-8080}
setsid "$BIN/omni-ledger" serve --bus kafka --snapshot-dir "$SNAPSHOT_DIR" --port "$PORT" --metrics-port "$API_METRICS_PORT" &
pids+=($!)
# Prometheus: the repository's config, its targets moved to this stack's metrics ports.
mkdir -p "$PROM_DIR"
sed -e "s/127.0.0.1:9610/127.0.0.1:$FLOW_METRICS_PORT/" -e "s/127.0.0.1:9611/127.0.0.1:$API_METRICS_PORT/" \
  infra/prometheus/prometheus.yml > "$PROM_DIR/prometheus.yml"
cp -r infra/prometheus/rules "$PROM_DIR/"
setsid prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn &
prom_pid=$!
echo "stack: broker $KAFKA_BOOTSTRAP_SERVERS, snapshots in $SNAPSHOT_DIR" >&2
echo "stack: API and console at http://127.0.0.1:$PORT/console/ (write token: $OMNI_LEDGER_SERVE_WRITE_TOKENS)" >&2
echo "stack: Prometheus at http://127.0.0.1:$PROM_PORT (alerts: /alerts; metrics: http://127.0.0.1:$FLOW_METRICS_PORT/metrics, http://127.0.0.1:$API_METRICS_PORT/metrics)" >&2
echo "stack: Grafana: import infra/grafana/dashboards/omni-ledger.json (infra/grafana/README.md)" >&2
echo "stack: try  $BIN/omni-ledger atp --sku SKU-00042 --snapshot-dir $SNAPSHOT_DIR   (Ctrl-C stops everything)" >&2
wait "${pids[@]}" || true
stop
