"""A real Prometheus scrapes a real flow (on Kafka) and the HTTP API: every panel and alert has data.

One scenario, on loopback only, every wait bounded:

1. Kafka topics under a unique prefix; the simulator produces at 300 events/s, and
   `examples/story.jsonl` (with its bad lines) is produced raw, so dead letters exist.
2. `omni-ledger run --source kafka --workers 2 --metrics-port P1` folds into a snapshot directory;
   `omni-ledger serve --metrics-port P2` serves it; a thread keeps making requests.
3. Prometheus (1 s scrapes and rule evaluations, a temporary data directory) loads the
   repository's recording rules and its alerts with every `for:` cut to 2 s.
4. `promtool check metrics` finds nothing to say about either `/metrics`.
5. Every query of the Grafana dashboard returns data, and so does every alert's
   expression, or, when it is legitimately empty on a healthy system, each of the
   series it is built on (listed below with the reason).
6. SIGSTOP the flow: it stops answering scrapes and confirming its snapshot; the API's
   view ages past `serve.max_snapshot_age` and OmniLedgerSnapshotStale fires (so does
   OmniLedgerFlowDown). SIGCONT, then Ctrl-C ends the flow cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO, run_cli
from tests.prometheus_tools import PROMETHEUS_DIR, Prometheus, free_port, get, promtool, running_prometheus

pytestmark = pytest.mark.integration

DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "omni-ledger.json"
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval would be with 1 s scrapes, and then some
MAX_SNAPSHOT_AGE_S = 5
SCRAPE = "1s"

# Alert -> the series its expression is built on, evaluated when the expression itself is
# empty, with why it may be: a healthy system fires nothing, which is the point.
UNDERLYING = {
    "OmniLedgerFlowDown": (["up{job='omni-ledger-flow'}"], "the flow is up"),
    "OmniLedgerApiDown": (["up{job='omni-ledger-api'}"], "the API is up"),
    "OmniLedgerSnapshotStale": (
        ["instance:omni_ledger_snapshot_age_seconds", "omni_ledger_snapshot_max_age_seconds"],
        "snapshots are fresh until the flow is stopped (then the test sees it fire)",
    ),
    "OmniLedgerConsumerLagGrowing": (
        [
            "job_topic:omni_ledger_kafka_consumer_lag_messages:sum",
            "deriv(job_topic:omni_ledger_kafka_consumer_lag_messages:sum[1m])",
        ],
        "the flow keeps up with 300 events/s",
    ),
    "OmniLedgerEventLagHigh": (["job:omni_ledger_event_lag_seconds:p99_5m"], "events are applied within seconds"),
    "OmniLedgerDeadLetterRate": (
        ["job:omni_ledger_dead_letter_ratio:rate5m"],
        "the story's few bad lines are well under 1% of the input",
    ),
    "OmniLedgerNegativePositions": (
        ["job:omni_ledger_negative_positions:ratio"],
        "few positions are negative in a few seconds of simulation",
    ),
    "OmniLedgerReservationRejectionSpike": (
        [
            "job:omni_ledger_reservation_rejection_ratio:rate5m",
            "job:omni_ledger_reservation_rejection_ratio:rate1h",
            "sum by (job) (rate(omni_ledger_reservation_decisions_total[5m]))",
        ],
        "rejections are not twice their hourly share",
    ),
    "OmniLedgerApiErrorRatio": (["job:omni_ledger_http_errors:ratio_rate5m"], "the API answers without 5xx"),
    "OmniLedgerReadModelBehind": (
        ["omni_ledger_read_model_behind_seconds"],
        "the read model follows a few small publishes a second within one or two of them",
    ),
}


def _wait(what: str, check, timeout: float, every: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 60) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _prometheus_config(directory: Path, flow_metrics: int, api_metrics: int) -> Path:
    """The repository's rules (alerts with `for:` cut to 2 s) and a 1 s scrape of our two processes."""
    rules = directory / "rules"
    rules.mkdir(parents=True)
    (rules / "recording.yml").write_text((PROMETHEUS_DIR / "rules" / "recording.yml").read_text())
    alerts = (PROMETHEUS_DIR / "rules" / "alerts.yml").read_text()
    shortened, count = re.subn(r"(?m)^(\s+for:\s*)\S+$", r"\g<1>2s", alerts)
    assert count >= 9, "every alert has a `for:` line"
    (rules / "alerts.yml").write_text(shortened)
    config = directory / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: {SCRAPE}
  scrape_timeout: {SCRAPE}
  evaluation_interval: {SCRAPE}
rule_files: [rules/recording.yml, rules/alerts.yml]
scrape_configs:
  - job_name: omni-ledger-flow
    static_configs: [{{targets: ["127.0.0.1:{flow_metrics}"]}}]
  - job_name: omni-ledger-api
    static_configs: [{{targets: ["127.0.0.1:{api_metrics}"]}}]
"""
    )
    check = promtool("check", "config", str(config))
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
    return config


def _dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL)))
    return queries


def _metric_value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def traffic() -> Iterator[list[str]]:
    """A thread making API requests (found, not found, a promise) every 0.3 s once given its base URL."""
    base: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.3):
            if not base:
                continue
            get(f"{base[0]}/health", timeout=2)
            get(f"{base[0]}/v1/skus/SKU-00001/availability", timeout=2)
            get(f"{base[0]}/v1/sites/NO-SUCH-SITE/positions", timeout=2)
            get(f"{base[0]}/v1/reservations/r-unknown", timeout=2)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield base
    stop.set()
    thread.join(timeout=5)


def test_prometheus_sees_every_panel_and_alert_and_fires_stale_snapshot_when_the_flow_stops(kafka, tmp_path, traffic):
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env = {
        **os.environ,
        "OMNI_LEDGER_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "OMNI_LEDGER_KAFKA_TOPIC_PREFIX": prefix,
        "OMNI_LEDGER_KAFKA_PARTITIONS": "2",
        "OMNI_LEDGER_SERVE_MAX_SNAPSHOT_AGE": f"{MAX_SNAPSHOT_AGE_S}s",
        "OMNI_LEDGER_LOGGING_FORMAT": "json",
    }
    created = run_cli("topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    story = run_cli("produce", "--file", str(EXAMPLES / "story.jsonl"), "--raw", env=env)
    assert story.returncode == 0, story.stderr

    directory = tmp_path / "snapshots"
    flow_metrics, api_port, api_metrics, prom_port = free_port(), free_port(), free_port(), free_port()
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("producer", "flow", "api")}
    cli = [sys.executable, "-m", "omni_ledger"]
    producer = subprocess.Popen(
        [*cli, "produce", "--sim", "--rate", "300"],
        cwd=REPO, env=env, stdout=logs["producer"], stderr=subprocess.STDOUT,
    )  # fmt: skip
    flow = subprocess.Popen(
        [*cli, "run", "--source", "kafka", "--snapshot-dir", str(directory), "--snapshot-interval", "500ms",
         "--workers", "2", "--metrics-port", str(flow_metrics)],
        cwd=REPO, env=env, stdout=logs["flow"], stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = subprocess.Popen(
        [*cli, "serve", "--snapshot-dir", str(directory), "--port", str(api_port), "--metrics-port", str(api_metrics)],
        cwd=REPO, env=env, stdout=logs["api"], stderr=subprocess.STDOUT,
    )  # fmt: skip
    processes = {"producer": producer, "flow": flow, "api": api}

    def alive() -> None:
        for name, process in processes.items():
            if process.poll() is not None:
                logs[name].flush()
                text = (tmp_path / f"{name}.log").read_text(errors="replace")[-4000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{text}")

    try:
        flow_url = f"http://127.0.0.1:{flow_metrics}/metrics"
        api_url = f"http://127.0.0.1:{api_metrics}/metrics"

        def flow_applies() -> bool:
            alive()
            status, body = get(flow_url)
            return status == 200 and _metric_value(body.decode(), 'omni_ledger_events_total{outcome="applied"') > 0

        _wait("the flow to apply events", flow_applies, 120)
        health = f"http://127.0.0.1:{api_port}/health"
        _wait("the API to serve a snapshot", lambda: alive() or get(health)[0] == 200, 60)
        traffic.append(f"http://127.0.0.1:{api_port}")

        with running_prometheus(
            _prometheus_config(tmp_path / "prometheus", flow_metrics, api_metrics), tmp_path / "tsdb", prom_port
        ) as prometheus:
            _scrapes_both_targets(prometheus)
            _wait("dead letters from the story's bad lines", lambda: _dead_letters(prometheus), 60)
            time.sleep(8)  # enough samples for every rate() and the recording rules over them
            alive()

            # promtool check metrics: no lint problem in either exposition.
            for url in (flow_url, api_url):
                status, body = get(url)
                assert status == 200, url
                lint = promtool("check", "metrics", stdin=body)
                assert lint.returncode == 0, f"{url}: {(lint.stdout + lint.stderr).decode()}"
                assert not (lint.stdout + lint.stderr).strip(), f"{url}: {(lint.stdout + lint.stderr).decode()}"

            _every_panel_has_data(prometheus)
            _every_alert_has_data(prometheus)
            # Two worker threads share the process's registry: two worker labels, both busy.
            workers = prometheus.query("sum by (worker) (omni_ledger_worker_effects_total)")
            assert sorted(r["metric"]["worker"] for r in workers) == ["0", "1"], workers
            assert all(float(r["value"][1]) > 0 for r in workers), workers

            # Publishing stops: the flow no longer answers nor confirms its snapshot.
            flow.send_signal(signal.SIGSTOP)
            try:
                firing = _wait(
                    "OmniLedgerSnapshotStale to fire",
                    lambda: (alive(), prometheus.firing())[1].get("OmniLedgerSnapshotStale"),
                    60,
                    every=1,
                )
                assert {a["labels"]["job"] for a in firing} == {"omni-ledger-api"}, firing
                assert firing[0]["annotations"]["runbook"]
                _wait("OmniLedgerFlowDown to fire", lambda: prometheus.firing().get("OmniLedgerFlowDown"), 30, every=1)
            finally:
                flow.send_signal(signal.SIGCONT)
    finally:
        _stop(producer)
        _stop(flow)
        _stop(api)
        for log in logs.values():
            log.close()
    assert flow.returncode == 0, (tmp_path / "flow.log").read_text(errors="replace")[-4000:]
    # The flow's log is JSON, one object a line, with the run's context.
    records = [json.loads(line) for line in (tmp_path / "flow.log").read_text().splitlines() if line.startswith("{")]
    assert any(r.get("command") == "run" and r.get("flow") == "omni_ledger_atp" for r in records)
    assert any(r.get("step") == "dead_letters" and r.get("reason") for r in records), "dead letters are logged"


def _scrapes_both_targets(prometheus: Prometheus) -> None:
    def both_up() -> bool:
        up = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
        return up == {"omni-ledger-flow": "1", "omni-ledger-api": "1"}

    _wait("Prometheus to scrape the flow and the API", both_up, 30)


def _dead_letters(prometheus: Prometheus) -> bool:
    result = prometheus.query("sum(omni_ledger_dead_letters_total)")
    return bool(result) and float(result[0]["value"][1]) > 0


def _every_panel_has_data(prometheus: Prometheus) -> None:
    queries = _dashboard_queries()
    assert len(queries) >= 20
    empty = [(title, expr) for title, expr in queries if not prometheus.query(expr)]
    assert not empty, "dashboard queries without data:\n" + "\n".join(f"  {t}: {e}" for t, e in empty)


def _every_alert_has_data(prometheus: Prometheus) -> None:
    rules = [
        rule
        for group in prometheus.api("rules", type="alert")["groups"]
        for rule in group["rules"]
        if rule["type"] == "alerting"
    ]
    names = {rule["name"] for rule in rules}
    assert names == set(UNDERLYING), f"every alert is listed in UNDERLYING: {sorted(names ^ set(UNDERLYING))}"
    missing = []
    for rule in rules:
        if prometheus.query(rule["query"]):
            print(f"{rule['name']}: its expression has data")
            continue  # it may even fire: a few negative positions, a burst of lag
        print(f"{rule['name']}: empty ({UNDERLYING[rule['name']][1]}): its series are checked")
        selectors, _why_empty = UNDERLYING[rule["name"]]
        missing += [f"{rule['name']}: {s}" for s in selectors if not prometheus.query(s)]
    assert not missing, "alerts whose underlying series have no data:\n  " + "\n  ".join(missing)
