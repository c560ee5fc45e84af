"""The Grafana dashboard: its shape, the panels an SRE needs first, and only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml  # PyYAML: pinned in constraints.txt (schemathesis needs it too)
from prometheus_client import CollectorRegistry

from omni_ledger import metrics

pytestmark = pytest.mark.component

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "omni-ledger.json"
RECORDING = REPO / "infra" / "prometheus" / "rules" / "recording.yml"
ALERTS = REPO / "infra" / "prometheus" / "rules" / "alerts.yml"
PROVISIONING = REPO / "infra" / "grafana" / "provisioning"
METRIC = re.compile(r"\b(?:[a-z_]+:)?omni_ledger_[a-z_]+(?::[a-z0-9_]+)?\b")


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exposed_names() -> set[str]:
    """Every sample name our registries can expose (counters with _total, histograms with _bucket...)."""
    registry = CollectorRegistry()
    flow = metrics.FlowMetrics(registry)
    flow.published(1, [], 1, 0.01, 1_790_000_000_000)
    flow.consumer_lag("inventory.events", 0, 0)
    names = {s.name for f in registry.collect() for s in f.samples}
    names |= {s.name for f in metrics.REGISTRY.collect() for s in f.samples}
    for histogram in ("omni_ledger_http_request_duration_seconds", "omni_ledger_read_model_refresh_duration_seconds"):
        names |= {f"{histogram}_bucket", f"{histogram}_count", f"{histogram}_sum"}  # labelled: none observed yet
    names |= {
        "omni_ledger_api_snapshot_published_timestamp_seconds",
        "omni_ledger_api_snapshot_heartbeat_timestamp_seconds",
        "omni_ledger_read_model_behind_seconds",  # only with a read model watched
    }
    return names


def _recorded() -> set[str]:
    doc = yaml.safe_load(RECORDING.read_text())
    return {rule["record"] for group in doc["groups"] for rule in group["rules"]}


def test_every_panel_queries_prometheus_and_ids_are_unique():
    dashboard = _dashboard()
    assert dashboard["uid"] == "omni-ledger"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_panels_an_sre_needs_first_are_there():
    text = " ".join(f"{p['title']} {p['description']}".lower() for p in _panels())
    for needed in (
        "throughput",
        "consumer lag",
        "event-time lag percentiles",
        "end-to-end latency percentiles",
        "snapshot age",
        "dead letters",
        "reservation",
        "negative positions",
        "per-worker balance",
        "requests by route",
    ):
        assert needed in text, needed


def test_the_dashboard_and_the_rules_name_only_metrics_that_exist():
    exposed, recorded = _exposed_names(), _recorded()
    exprs = [t["expr"] for p in _panels() for t in p["targets"]]
    for doc in (yaml.safe_load(RECORDING.read_text()), yaml.safe_load(ALERTS.read_text())):
        exprs += [rule["expr"] for group in doc["groups"] for rule in group["rules"]]
    unknown = {name for expr in exprs for name in METRIC.findall(expr) if name not in exposed | recorded}
    assert not unknown, f"names no process exposes and no rule records: {sorted(unknown)}"


def test_no_query_groups_by_a_label_that_is_unbounded():
    exprs = [t["expr"] for p in _panels() for t in p["targets"]]
    for expr in exprs:
        for forbidden in ("sku", "site_id", "event_id", "reservation_id"):
            assert not re.search(rf"\b{forbidden}\b", expr), expr


def test_provisioning_points_grafana_at_the_dashboard_and_a_prometheus():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasources[0]["type"] == "prometheus"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "omni-ledger.yaml").read_text())["providers"]
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"]
