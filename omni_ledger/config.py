"""One typed, frozen settings object: defaults, then a TOML file, then the environment.

Each TOML table is a section dataclass below, and each key one field declared with
`setting(default, doc)`: its type says how it is read, its section's `__post_init__` checks
it, and `docs/configuration.md` (generated: `python -m omni_ledger.config --markdown`) lists
it with its default and its variable `OMNI_LEDGER_<SECTION>_<KEY>`. Command-line flags
override the result (`Settings.with_overrides`). Everything is checked here, before any
file or connection is opened, and an error names the key, where its value came from, what
was expected and what came.

Why our own loader (`omni_ledger.config_fields`, ≈250 lines) and not pydantic-settings:
- errors: ours name the key and the origin of *that* value (`serve.port (environment)`);
  pydantic-settings merges its sources before validating, so the origin is lost, and its
  `ValidationError` would have to be rewritten into a `ConfigError` under our root anyway;
- durations: operators write '500ms', '7d'; pydantic reads ISO 8601 or seconds, so a
  custom validator per duration field would be needed;
- variables: `OMNI_LEDGER_KAFKA_SASL_PASSWORD` splits section from key at the first `_`
  while keys hold `_` too; pydantic-settings needs a nested delimiter or a split limit per
  model, and the names must stay as they are;
- import cost: `run`, `atp` and the other commands load the settings first; ours costs the
  stdlib, pydantic-settings adds pydantic and pydantic-core to every command (today only
  `serve` imports pydantic, through FastAPI);
- `Secret` masking is equal on both sides (`SecretStr`), so it decides nothing.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, overload

from adapters.network_file import load_network
from ledger.errors import ConfigError
from ledger.policy import LedgerPolicy, SafetyStock
from omni_ledger.config_fields import (
    Given,
    Invalid,
    Secret,
    apply,
    environment_values,
    file_values,
    invalid,
    parse_duration,
    reference,
    setting,
)
from omni_ledger.logs import LEVELS, LogFormat
from simulator import SimConfig

__all__ = [
    "KafkaSettings",
    "LedgerSettings",
    "LoggingSettings",
    "MetricsSettings",
    "RuntimeSettings",
    "SafetyStockSettings",
    "Secret",
    "ServeSettings",
    "Settings",
    "SimSettings",
    "SnapshotSettings",
    "load_settings",
    "parse_duration",
    "reference_markdown",
]

ClockChoice = Literal["auto", "wall", "event"]
SiteKind = Literal["DC", "STORE", "SUPPLIER", "SELLER"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Framing = Literal["single-object", "confluent"]
Bus = Literal["file", "kafka"]


def _positive(key: str, value: timedelta) -> None:
    if value <= timedelta(0):
        invalid(key, "a positive duration", str(value))


def _within(key: str, value: int, low: int, high: int, expected: str = "an integer") -> None:
    if not low <= value <= high:
        invalid(key, f"{expected} within {low:,}..{high:,}", value)


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """How the fold treats time."""

    lateness_window: timedelta = setting(timedelta(hours=24), "Older events at a position are refused as too_late.")
    max_clock_skew: timedelta = setting(
        timedelta(minutes=5), "Events further ahead of the ledger clock than this are refused."
    )
    clock: ClockChoice = setting(
        "auto", "The ledger clock: auto is event time for a file replay, wall time for the simulator and --follow."
    )

    def __post_init__(self) -> None:
        _positive("lateness_window", self.lateness_window)


@dataclass(frozen=True, slots=True)
class SnapshotSettings:
    """Where and how often the snapshots are published."""

    dir: Path = setting(Path("var/snapshots"), "The snapshot store's directory.")
    interval: timedelta = setting(timedelta(seconds=1), "At most one snapshot per interval.")
    retention: timedelta = setting(timedelta(days=7), "Snapshots older than this are expired (as-of reads).")
    maintenance_interval: timedelta = setting(timedelta(minutes=10), "How often the store is compacted and expired.")
    catalog: str = setting(
        "", 'The DuckLake catalog: empty for SQLite at DIR/catalog.sqlite, or "postgres:<libpq conninfo>".'
    )
    writers: int = setting(1, "Snapshot writers sharing the catalog (one per process in a cluster).")

    def __post_init__(self) -> None:
        for key in ("interval", "retention", "maintenance_interval"):
            _positive(key, getattr(self, key))
        if self.catalog and not self.catalog.startswith("postgres:"):
            invalid("catalog", "empty (SQLite in the snapshot dir) or 'postgres:<conninfo>'", self.catalog)
        _within("writers", self.writers, 1, 64)


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """The Bytewax processes and workers that run the flow."""

    workers: int = setting(1, "Bytewax workers in this process.")
    process_id: int = setting(0, "This process in a cluster (0..N-1); with addresses.")
    addresses: tuple[str, ...] = setting(
        (), "Every process of a Bytewax cluster (host:port), in process_id order; empty: one process.", sep=";"
    )
    # 10 s, not 1: each epoch saves every position it touched, and on 1M Kafka events the
    # flow ran 42% faster with 10 s epochs (11.6k vs 16.5k events/s, make bench, docs/scaling.md).
    epoch_interval: timedelta = setting(
        timedelta(seconds=10), "Recovery snapshot cadence (each saves every position touched since the last)."
    )
    recovery: bool = setting(True, "Resume after a crash from DIR/recovery.")

    def __post_init__(self) -> None:
        _positive("epoch_interval", self.epoch_interval)
        _within("workers", self.workers, 1, 64)
        for address in self.addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                invalid("addresses", "'host:port;host:port' (semicolon-separated)", ";".join(self.addresses))
        if self.addresses and not 0 <= self.process_id < len(self.addresses):
            expected = f"an integer within 0..{len(self.addresses) - 1} (one per address)"
            invalid("process_id", expected, self.process_id)
        if not self.addresses and self.process_id != 0:
            invalid("process_id", "0 unless runtime.addresses lists the cluster", self.process_id)


@dataclass(frozen=True, slots=True)
class SafetyStockSettings:
    """Units held back from ATP; the most specific rule wins: sku, site, then site kind ([sites])."""

    default: int = setting(0, "Units held back at every position no other rule names.")
    by_kind: Mapping[str, int] = setting({}, "Units by site kind, e.g. { STORE = 1 }.")
    by_site: Mapping[str, int] = setting({}, 'Units by site id, e.g. { "ST-001" = 2 }.')
    by_sku: Mapping[str, int] = setting({}, 'Units by sku, e.g. { "SKU-00001" = 0 }.')

    def __post_init__(self) -> None:
        self.rules({})  # SafetyStock checks the units and names the rule

    def rules(self, site_kinds: Mapping[str, str]) -> SafetyStock:
        """The fold's safety stock, with the site kinds of [sites]."""
        return SafetyStock(
            default=self.default,
            by_sku=dict(self.by_sku),
            by_site=dict(self.by_site),
            by_kind=dict(self.by_kind),
            site_kinds=dict(site_kinds),
        )


_SIM = SimConfig()


@dataclass(frozen=True, slots=True)
class SimSettings:
    """The built-in retailer simulator: a `SimConfig` of this size, stocked for a day at `rate`."""

    seed: int = setting(7, "The same seed, the same events (SimConfig's own default is 0).")
    rate: int = setting(2000, "Events per second.")
    dcs: int = setting(_SIM.dcs, "DCs of the generated network.")
    stores: int = setting(_SIM.stores, "Stores of the generated network.")
    suppliers: int = setting(_SIM.suppliers, "Suppliers of the generated network.")
    sellers: int = setting(_SIM.sellers, "Marketplace sellers of the generated network.")
    skus: int = setting(_SIM.skus, "Skus at every site.")
    network: Path | None = setting(
        None,
        "A network file (docs/network.md) whose sites, lanes and routes the simulator uses instead of "
        "generated ones (then dcs, stores, suppliers and sellers are unused); empty: generated.",
    )

    def __post_init__(self) -> None:
        _within("rate", self.rate, 1, 10_000_000, "events per second")
        # Built now, reading the network file: a missing or broken file, or a size the
        # simulator refuses, stops the command before anything starts.
        try:
            self.sim_config()
        except ConfigError as exc:
            named = re.match(r"SimConfig\.(\w+)", str(exc))
            own = named is not None and named.group(1) in {spec.name for spec in fields(SimSettings)}
            key = named.group(1) if named and own and self.network is None else "network"
            raise Invalid((key,), str(exc)) from exc

    def sim_config(self, seed: int | None = None) -> SimConfig:
        """The simulator's config: this network, stocked for a day of demand at `rate`.

        Reads the network file, if any (a `ConfigError` names the key in the file).
        """
        return replace(
            _SIM,
            seed=self.seed if seed is None else seed,
            dcs=self.dcs,
            stores=self.stores,
            suppliers=self.suppliers,
            sellers=self.sellers,
            skus=self.skus,
            # Shelves are stocked for a day of demand at this rate, not learnt over hours.
            expected_rate=self.rate,
            network=None if self.network is None else load_network(self.network),
        )


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """How to reach the Kafka cluster, and the topics' names and shapes (--source kafka, `topics`, `produce`)."""

    bootstrap: str = setting("127.0.0.1:19092", "The brokers, host:port[,host:port...].")
    topic_prefix: str = setting("", "Prepended to inventory.events, inventory.events.dlq, atp.changes, ...")
    partitions: int = setting(6, "Partitions of each topic `omni-ledger topics create` makes.")
    replication: int = setting(1, "Replication factor of each topic `omni-ledger topics create` makes.")
    security_protocol: SecurityProtocol = setting("PLAINTEXT", "How clients connect to the brokers.")
    sasl_mechanism: SaslMechanism = setting("SCRAM-SHA-256", "The SASL mechanism, for the SASL_* protocols.")
    sasl_username: str = setting("", "The SASL user, for the SASL_* protocols.")
    sasl_password: Secret = setting(Secret(""), "Never printed; prefer OMNI_LEDGER_KAFKA_SASL_PASSWORD.")
    ssl_ca_location: str = setting("", "A CA certificate file for SSL; empty: the system's.")
    framing: Framing = setting("single-object", "How Avro values are framed; confluent needs schema_registry_url.")
    schema_registry_url: str = setting("", "The Confluent schema registry, for framing = confluent.")
    writer_schemas: tuple[Path, ...] = setting(
        (),
        "Schemas (.avsc) other producers write single-object values with (say, one more optional field): "
        "their fingerprints are accepted and their values resolved to ours.",
        sep=",",
    )

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            invalid("bootstrap", "host:port[,host:port...]", self.bootstrap)
        if self.security_protocol.startswith("SASL") and (not self.sasl_username or not self.sasl_password):
            invalid(("sasl_username", "sasl_password"), f"both set for {self.security_protocol}", self.sasl_username)
        if self.framing == "confluent" and not self.schema_registry_url:
            invalid("schema_registry_url", "a URL when kafka.framing is 'confluent'", self.schema_registry_url)
        for schema in self.writer_schemas:
            if not schema.is_file():
                invalid("writer_schemas", "paths of existing .avsc files", str(schema))
        _within("partitions", self.partitions, 1, 10_000)
        _within("replication", self.replication, 1, 10)

    def topic(self, name: str) -> str:
        """A topic's full name with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    def client_config(self) -> dict[str, str]:
        """librdkafka settings every client gets (connection and security)."""
        config = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            config |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password.reveal(),
            }
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """The HTTP API of `omni-ledger serve` (and `demo`), and the promise it makes."""

    host: str = setting("127.0.0.1", "The listen address.")
    port: int = setting(8080, "The TCP port (0: any free port).")
    network: Path = setting(Path("examples/network.toml"), "Sites, lanes, routes and appointments (docs/network.md).")
    bus: Bus = setting(
        "file",
        "Where confirms go: file appends to DIR/inbox.jsonl, which `run --follow` folds; "
        "kafka sends to the inventory.events topic.",
    )
    max_snapshot_age: timedelta = setting(timedelta(seconds=30), "Older than this, reads answer 503.")
    confirm_timeout: timedelta = setting(timedelta(seconds=5), "How long a confirm waits for the fold's decision.")
    write_tokens: tuple[Secret, ...] = setting(
        (),
        "Bearer tokens that may confirm and act; prefer OMNI_LEDGER_SERVE_WRITE_TOKENS. Empty: writes are refused.",
        sep=",",
    )
    read_tokens: tuple[Secret, ...] = setting((), "Bearer tokens that may only read.", sep=",")
    open_reads: bool = setting(True, "Read endpoints need no token.")
    hold_days: int = setting(3, "How long a unit is held for the customer once it is ready.")
    refresh_process: bool = setting(
        True,
        "The read model's refreshes run their DuckDB statements in a child process with a GIL of its own: "
        "a publish is visible sooner under load, for ~150 MB more (docs/serving.md). "
        "If the child cannot start, the refreshes run in the serving process (a warning in the log).",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            invalid("port", "a TCP port within 0..65535 (0: any free port)", self.port)
        _positive("max_snapshot_age", self.max_snapshot_age)
        _positive("confirm_timeout", self.confirm_timeout)
        _within("hold_days", self.hold_days, 1, 60)
        if {t.reveal() for t in self.write_tokens} & {t.reveal() for t in self.read_tokens}:
            invalid("read_tokens", "tokens distinct from serve.write_tokens", "a token in both")
        for token in (*self.write_tokens, *self.read_tokens):
            if len(token.reveal()) < 16:
                invalid(("write_tokens", "read_tokens"), "tokens of at least 16 characters", "a shorter token")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where a long-running command (`run`, `serve`) serves Prometheus `/metrics`."""

    host: str = setting("127.0.0.1", "The listen address; 0.0.0.0 to be scraped from another host.")
    port: int = setting(0, "Its TCP port (--metrics-port); 0: no metrics server.")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            invalid("port", "a TCP port within 0..65535 (0: no metrics server)", self.port)
        if not self.host.strip():
            invalid("host", "a listen address such as 127.0.0.1", self.host)


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """How log records are written to stderr."""

    format: LogFormat = setting("auto", "auto: text on a terminal, else one JSON object a line.")
    level: str = setting("INFO", f"One of {', '.join(LEVELS)} (any case).")

    def __post_init__(self) -> None:
        if self.level.upper() not in LEVELS:
            invalid("level", f"one of {', '.join(LEVELS)}", self.level)


V = TypeVar("V")


class _Flat(Generic[V]):
    """A setting of a section read at the top (`settings.snapshot_dir`), the name the callers use."""

    def __init__(self, section: str, key: str) -> None:
        self.section, self.key = section, key

    @overload
    def __get__(self, instance: None, owner: type) -> _Flat[V]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> V: ...
    def __get__(self, instance: object | None, owner: type) -> V | _Flat[V]:
        if instance is None:
            return self
        value: V = getattr(getattr(instance, self.section), self.key)
        return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the commands need, validated: one section per TOML table."""

    ledger: LedgerSettings = LedgerSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    safety_stock: SafetyStockSettings = SafetyStockSettings()
    sites: Mapping[str, SiteKind] = setting({}, 'Site kinds, for safety stock by kind, e.g. "DC-01" = "DC".')
    simulator: SimSettings = SimSettings()
    kafka: KafkaSettings = KafkaSettings()
    serve: ServeSettings = ServeSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()

    # The names `run`, the store and the server read, and the flags `with_overrides` takes:
    # each points at its one field above. (Callers may move to `settings.snapshots.dir` and
    # so on; these then go, and `with_overrides` keeps its flag names in _FLAGS.)
    snapshot_dir = _Flat[Path]("snapshots", "dir")
    snapshot_interval = _Flat[timedelta]("snapshots", "interval")
    snapshot_retention = _Flat[timedelta]("snapshots", "retention")
    maintenance_interval = _Flat[timedelta]("snapshots", "maintenance_interval")
    snapshot_catalog = _Flat[str]("snapshots", "catalog")
    snapshot_writers = _Flat[int]("snapshots", "writers")
    lateness_window = _Flat[timedelta]("ledger", "lateness_window")
    max_clock_skew = _Flat[timedelta]("ledger", "max_clock_skew")
    clock = _Flat[ClockChoice]("ledger", "clock")
    workers = _Flat[int]("runtime", "workers")
    process_id = _Flat[int]("runtime", "process_id")
    addresses = _Flat[tuple[str, ...]]("runtime", "addresses")
    epoch_interval = _Flat[timedelta]("runtime", "epoch_interval")
    recovery = _Flat[bool]("runtime", "recovery")

    def policy(self) -> LedgerPolicy:
        """The fold's rules from these settings."""
        return LedgerPolicy(
            lateness_window_ms=int(self.ledger.lateness_window.total_seconds() * 1000),
            max_clock_skew_ms=int(self.ledger.max_clock_skew.total_seconds() * 1000),
            safety_stock=self.safety_stock.rules(self.sites),
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with command-line values applied (None means 'not given') and re-validated.

        A flag is named as a top-level name above (`snapshot_dir`) or in `_FLAGS` (`rate`).
        """
        given: Given = {}
        for name, value in changes.items():
            if value is None:
                continue
            flat = getattr(Settings, name, None)
            section, key = (flat.section, flat.key) if isinstance(flat, _Flat) else _FLAGS[name]
            given.setdefault(section, {})[key] = (value, "command line")
        return apply(self, given)


# Command-line flags whose name is not a top-level name of Settings.
_FLAGS: dict[str, tuple[str, str]] = {
    "rate": ("simulator", "rate"),
    "seed": ("simulator", "seed"),
    "bootstrap": ("kafka", "bootstrap"),
    "host": ("serve", "host"),
    "port": ("serve", "port"),
    "network": ("serve", "network"),
    "bus": ("serve", "bus"),
    "metrics_host": ("metrics", "host"),
    "metrics_port": ("metrics", "port"),
    "log_format": ("logging", "format"),
    "log_level": ("logging", "level"),
}


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file at `path` (if given), then OMNI_LEDGER_* variables."""
    layers = []
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            msg = f"cannot read config file {path}: {exc.strerror}; pass an existing file to --config"
            raise ConfigError(msg) from exc
        except tomllib.TOMLDecodeError as exc:
            msg = f"config file {path} is not valid TOML: {exc}"
            raise ConfigError(msg) from exc
        layers.append(file_values(doc, f"file {path}", Settings))
    layers.append(environment_values(os.environ if environ is None else environ, Settings))
    # Applied together, each section built once: a file may leave the password to
    # OMNI_LEDGER_KAFKA_SASL_PASSWORD, as it should.
    return apply(Settings(), *layers)


def reference_markdown() -> str:
    """docs/configuration.md: every setting, made from the fields above."""
    intro = (
        "Generated from `omni_ledger/config.py` by `python -m omni_ledger.config --markdown`: "
        "edit the fields there.\n\n"
        "`omni-ledger --config FILE` reads a TOML file; every key is optional. Then each "
        "`OMNI_LEDGER_<SECTION>_<KEY>` variable overrides its key (scalars only), then the command's flags. "
        'Durations read as `"500ms"`, `"2s"`, `"15m"`, `"24h"`, `"7d"`. An error names the key and '
        "where its value came from."
    )
    return reference(Settings, "Configuration", intro)


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m omni_ledger.config --markdown")
    sys.stdout.write(reference_markdown())
