"""Settings: defaults, then a TOML file, then the environment; errors name the key and its origin."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ledger.errors import ConfigError
from ledger.network import load_network
from omni_ledger.config import load_settings, parse_duration
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.unit


def test_defaults_need_no_file_and_no_environment():
    settings = load_settings(environ={})
    assert settings.snapshot_dir == Path("var/snapshots")
    assert settings.policy().lateness_window_ms == 24 * 3_600_000


def test_a_file_then_the_environment_override_the_defaults(tmp_path):
    config = tmp_path / "ledger.toml"
    config.write_text(
        '[ledger]\nlateness_window = "2h"\n[snapshots]\ndir = "/data/snap"\ninterval = "500ms"\n'
        '[safety_stock]\nby_kind = { STORE = 2 }\n[sites]\n"ST-1" = "STORE"\n[simulator]\nrate = 50\n'
    )
    settings = load_settings(config, environ={"OMNI_LEDGER_SIMULATOR_RATE": "75"})
    assert settings.lateness_window == timedelta(hours=2)
    assert settings.snapshot_interval == timedelta(milliseconds=500)
    assert settings.snapshot_dir == Path("/data/snap")
    assert settings.simulator.rate == 75
    assert settings.policy().safety_stock.for_position("ST-1", "SKU") == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[ledger]\nlateness_window = "soon"\n', "ledger.lateness_window (file"),
        ("[ledger]\nwindow = 3\n", "unknown key ledger.window"),
        ("[broker]\nhost = 1\n", "unknown section [broker]"),
        ("[kafka]\nbrokers = 1\n", "unknown key kafka.brokers"),
        ('[runtime]\nworkers = "two"\n', "runtime.workers (file"),
        ("[safety_stock]\nby_kind = { STORE = -1 }\n", "safety_stock.by_kind['STORE']"),
        ('[sites]\n"X" = "WAREHOUSE"\n', "sites.X"),
        ("[ledger\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key_and_the_file(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_settings(config, environ={})


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="OMNI_LEDGER_SIMULATOR_RATE"):
        load_settings(environ={"OMNI_LEDGER_SIMULATOR_RATE": "fast"})


def test_a_missing_config_file_says_which():
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(Path("/nonexistent/omni.toml"), environ={})


def test_the_simulator_network_is_read_at_start_and_an_empty_one_means_generated_sites(tmp_path):
    config = tmp_path / "omni.toml"
    config.write_text(f'[simulator]\nnetwork = "{EXAMPLES / "network.toml"}"\n')
    on_file = load_settings(config, environ={})
    generated = load_settings(config, environ={"OMNI_LEDGER_SIMULATOR_NETWORK": ""})

    assert on_file.simulator.sim_config().network == load_network(EXAMPLES / "network.toml")
    assert generated.simulator.network is None
    assert generated.simulator.sim_config().network is None
    with pytest.raises(ConfigError, match=r"^simulator\.network \(environment\): cannot read the network file"):
        load_settings(environ={"OMNI_LEDGER_SIMULATOR_NETWORK": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("2s", 2), ("15m", 900), ("24h", 86_400), ("7d", 604_800)]
)
def test_durations_read_as_humans_write_them(text, seconds):
    assert parse_duration(text, "x") == timedelta(seconds=seconds)


def test_a_file_may_leave_the_sasl_password_to_the_environment(tmp_path):
    config = tmp_path / "ledger.toml"
    config.write_text('[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_username = "ledger"\n')
    settings = load_settings(config, environ={"OMNI_LEDGER_KAFKA_SASL_PASSWORD": "s3cret-from-a-secret"})
    assert settings.kafka.sasl_password.reveal() == "s3cret-from-a-secret"
    with pytest.raises(ConfigError, match="SASL_SSL"):
        load_settings(config, environ={})


def test_a_cluster_lists_every_process_and_this_one_among_them():
    settings = load_settings(
        environ={"OMNI_LEDGER_RUNTIME_ADDRESSES": "10.0.0.1:2101;10.0.0.2:2101", "OMNI_LEDGER_RUNTIME_PROCESS_ID": "1"}
    )
    assert settings.addresses == ("10.0.0.1:2101", "10.0.0.2:2101")
    assert settings.process_id == 1
    with pytest.raises(ConfigError, match=r"runtime\.process_id"):
        load_settings(environ={"OMNI_LEDGER_RUNTIME_ADDRESSES": "10.0.0.1:2101", "OMNI_LEDGER_RUNTIME_PROCESS_ID": "1"})
    with pytest.raises(ConfigError, match=r"runtime\.addresses"):
        load_settings(environ={"OMNI_LEDGER_RUNTIME_ADDRESSES": "10.0.0.1"})
