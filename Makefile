# omni-ledger: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SNAPSHOT_DIR ?= var/snapshots
SIM_NETWORK ?= var/sim-network.toml
RATE ?= 2000
PYTEST_ARGS ?=

.PHONY: help venv run test lint typecheck unit component integration bench-fold clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {n[NR] = $$1; d[NR] = $$2; if (length($$1) > w) w = length($$1)} END {for (i = 1; i <= NR; i++) printf "  \033[36m%-*s\033[0m  %s\n", w, n[i], d[i]}'

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 not found; install python3.11 or set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || { echo "error: $(PYTHON) is not Python 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create the virtualenv with pinned dependencies

.PHONY: demo serve
demo: $(STAMP) ## Mme Martin's visit, end to end through the real fold (embedded, under var/demo)
	$(BIN)/omni-ledger demo --dir var/demo

serve: $(STAMP) ## The HTTP API and web console over var/snapshots, on the simulator's sites (http://127.0.0.1:8080/console/)
	$(BIN)/omni-ledger sim-network --out $(SIM_NETWORK)
	$(BIN)/omni-ledger serve --snapshot-dir $(SNAPSHOT_DIR) --network $(SIM_NETWORK)

# `make run`: RUN_RATE simulated events/s; PORT (HOST) for the API and console; RUN_ARGS adds `up`
# options, e.g. RUN_ARGS=--reset to start from an empty store, RUN_ARGS=--no-people.
RUN_RATE ?= 200
HOST ?= 127.0.0.1
PORT ?= 8080
RUN_ARGS ?=
run: $(STAMP) ## The living retailer: simulator, flow, simulated people, API and console (http://127.0.0.1:8080/console/), metrics; Ctrl-C stops all
	$(BIN)/omni-ledger up --snapshot-dir $(SNAPSHOT_DIR) --rate $(RUN_RATE) --host $(HOST) --port $(PORT) $(RUN_ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

typecheck: $(STAMP) ## mypy (strict on ledger/ and simulator/)
	$(BIN)/mypy ledger simulator flows adapters omni_ledger bench

test: lint typecheck prometheus-tools ## Lint, type-check and run every test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP) ## Only the pure domain tests (ledger/, simulator/): seconds
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

component: $(STAMP) ## Adapters, flows and the application alone, without external services
	$(BIN)/python -m pytest -m component $(PYTEST_ARGS)

integration: $(STAMP) prometheus-tools ## Only the integration and end-to-end tests
	$(BIN)/python -m pytest -m 'integration or e2e' $(PYTEST_ARGS)

bench-fold: $(STAMP) ## Benchmark the fold alone and a 1M-event file replay end to end
	$(BIN)/python -m bench.fold $(BENCH_ARGS)

clean: ## Remove the virtualenv, caches and local data
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis

# A local Apache Kafka broker (infra/kafka/broker.py, stdlib Python: no virtualenv needed).
# KAFKA_DIR=path picks the data directory (default var/kafka); KAFKA_ARGS adds `up` options,
# e.g. make kafka-up KAFKA_ARGS="--free-ports --json".
.PHONY: kafka-up kafka-down kafka-status

kafka-up: ## Start a local Kafka broker (jars from Maven Central; needs Java 17+ and Maven)
	@python3 infra/kafka/broker.py up $(if $(KAFKA_DIR),--dir $(KAFKA_DIR)) $(KAFKA_ARGS)

kafka-down: ## Stop the local Kafka broker
	@python3 infra/kafka/broker.py down $(if $(KAFKA_DIR),--dir $(KAFKA_DIR))

kafka-status: ## Whether the local Kafka broker runs, and its ports
	@python3 infra/kafka/broker.py status $(if $(KAFKA_DIR),--dir $(KAFKA_DIR)) || test $$? -eq 3

# Prometheus and promtool (Debian's prometheus package, installed when missing and root):
# the tests run a real Prometheus and check the rules; `make stack` runs one.
.PHONY: prometheus-tools prometheus-check
prometheus-tools: ## Install Prometheus and promtool when missing (apt, as root)
	@bash infra/prometheus/install.sh

prometheus-check: prometheus-tools ## promtool: check the config and rules, run the alert unit tests
	promtool check config infra/prometheus/prometheus.yml
	promtool test rules infra/prometheus/tests/alerts_test.yml

.PHONY: stack
stack: $(STAMP) prometheus-tools ## The whole system: local Kafka, topics, simulator producing, the flow into snapshots, the API and console (Ctrl-C stops all)
	RATE=$(RATE) bash infra/stack.sh

.PHONY: bench-kafka
bench-kafka: $(STAMP) ## Benchmark the flow on a local Kafka broker: events/s, the raw ceiling, their ratio, p50/p99 latency
	$(BIN)/python -m bench.kafka $(BENCH_ARGS)

.PHONY: bench-replay
bench-replay: $(STAMP) ## Issue 14's done-when: 2M distinct positions replayed from a file with 1 s epochs, Bytewax's files, then a resume with a small new file
	$(BIN)/python -m bench.replay_scale $(BENCH_ARGS)

.PHONY: bench-serve
bench-serve: $(STAMP) ## Benchmark the HTTP API over 1,000 sites x 20,000 skus: req/s, p50/p90/p99 per scenario
	$(BIN)/python -m bench.serve $(BENCH_ARGS)

# The suite: throughput vs the raw ceiling, scale-out, a py-spy profile, latency, snapshots, memory.
# BENCH_ARGS="--quick" for a short run, "--only latency,memory" for some sections, "--json" for machines.
.PHONY: bench-restart
bench-restart: $(STAMP) ## Benchmark a Kafka broker restart under a running flow: seconds from broker up to caught up
	$(BIN)/python -m bench.broker_restart $(BENCH_ARGS)

.PHONY: bench
bench: $(STAMP) ## Benchmark suite: every issue-8 figure against its target in one table; JSON + flame graph in bench/results/
	$(BIN)/python -m bench $(BENCH_ARGS)
