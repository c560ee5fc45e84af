"""Settings: defaults, then a TOML file, then the environment; errors name the key and its origin."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.network_file import load_network
from ledger.errors import ConfigError
from omni_ledger.config import Settings, SimSettings, load_settings, parse_duration, reference_markdown
from simulator import SimConfig
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.component


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


def test_the_configuration_reference_is_generated_from_the_fields():
    checked_in = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
    assert checked_in == reference_markdown(), "run: python -m omni_ledger.config --markdown > docs/configuration.md"


def test_every_setting_has_a_doc_and_a_variable_in_the_reference():
    text = reference_markdown()
    for section in fields(Settings):
        kind = type(getattr(Settings(), section.name))
        if not is_dataclass(kind):
            continue
        for spec in fields(kind):
            assert spec.metadata.get("doc"), f"{section.name}.{spec.name} has no doc"
            assert f"| `{spec.name}` |" in text


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"OMNI_LEDGER_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "kafka.security_protocol (environment): "
            "expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got 'TLS'",
        ),
        ({"OMNI_LEDGER_SERVE_BUS": "pigeon"}, "expected one of file, kafka"),
        ({"OMNI_LEDGER_LOGGING_FORMAT": "xml"}, "expected one of auto, json, text"),
        ({"OMNI_LEDGER_SERVE_PORT": "70000"}, "serve.port (environment): expected a TCP port within 0..65535"),
        (
            {"OMNI_LEDGER_KAFKA_PARTITIONS": "0"},
            "kafka.partitions (environment): expected an integer within 1..10,000, got 0",
        ),
        ({"OMNI_LEDGER_SIMULATOR_STORES": "0"}, "simulator.stores (environment): SimConfig.stores"),
    ],
)
def test_a_refused_value_names_its_key_and_its_origin(environ, message):
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=environ)
    assert message in str(refused.value)


def test_a_cross_key_check_names_the_origin_of_each_value_it_read(tmp_path):
    config = tmp_path / "ledger.toml"
    config.write_text('[runtime]\naddresses = "10.0.0.1:2101"\n')
    with pytest.raises(ConfigError, match=r"^runtime\.process_id \(environment\): expected an integer within 0\.\.0"):
        load_settings(config, environ={"OMNI_LEDGER_RUNTIME_PROCESS_ID": "3"})


def test_command_line_overrides_are_checked_and_named_as_such():
    settings = load_settings(environ={}).with_overrides(snapshot_dir=Path("/x"), rate=10, port=None)
    assert (settings.snapshots.dir, settings.snapshot_dir, settings.simulator.rate) == (Path("/x"), Path("/x"), 10)
    with pytest.raises(ConfigError, match=r"^runtime\.workers \(command line\): expected an integer within 1\.\.64"):
        settings.with_overrides(workers=0)


def test_a_secret_never_shows_in_the_settings_repr():
    settings = load_settings(environ={"OMNI_LEDGER_KAFKA_SASL_PASSWORD": "hunter2-hunter2"})
    assert "hunter2" not in repr(settings)
    assert settings.kafka.sasl_password.reveal() == "hunter2-hunter2"


def test_the_simulator_settings_default_to_the_simulators_own_config():
    shape = ("dcs", "stores", "suppliers", "sellers", "skus")
    assert {k: getattr(SimSettings(), k) for k in shape} == {k: getattr(SimConfig(), k) for k in shape}
    assert SimSettings(rate=500).sim_config().expected_rate == 500
