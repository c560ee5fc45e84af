"""The Prometheus config and rules are valid, and every alert is unit-tested (promtool)."""

from __future__ import annotations

import pytest
import yaml  # PyYAML: pinned in constraints.txt (schemathesis needs it too)

from tests.prometheus_tools import PROMETHEUS_DIR, promtool

pytestmark = pytest.mark.integration

ALERTS = PROMETHEUS_DIR / "rules" / "alerts.yml"
RECORDING = PROMETHEUS_DIR / "rules" / "recording.yml"
UNIT_TESTS = PROMETHEUS_DIR / "tests" / "alerts_test.yml"


def _alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_scrape_config_and_its_rule_files():
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_promtool_accepts_the_recording_and_alerting_rules():
    result = promtool("check", "rules", str(RECORDING), str(ALERTS))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_every_alert_passes_its_promtool_unit_tests():
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_every_alert_has_a_severity_a_summary_and_a_runbook_note():
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]  # type: ignore[index]
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations.get("summary"), rule["alert"]
        assert annotations.get("description"), rule["alert"]
        assert len(annotations.get("runbook", "")) > 40, f"{rule['alert']}: the runbook note says what to do"
        assert rule.get("for"), f"{rule['alert']}: a `for` keeps one bad scrape from paging"


def test_every_alert_has_a_unit_test_that_fires_it():
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    quiet = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if not case.get("exp_alerts")
    }
    names = {str(rule["alert"]) for rule in _alert_rules()}
    assert names <= fired, f"alerts never shown firing: {sorted(names - fired)}"
    assert names <= quiet, f"alerts never shown quiet: {sorted(names - quiet)}"
    assert {"OmniLedgerFlowDown", "OmniLedgerSnapshotStale", "OmniLedgerConsumerLagGrowing",
            "OmniLedgerDeadLetterRate", "OmniLedgerNegativePositions", "OmniLedgerReservationRejectionSpike",
            "OmniLedgerApiErrorRatio"} <= names  # fmt: skip
