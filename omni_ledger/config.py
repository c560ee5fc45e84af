"""One typed, frozen settings object: defaults, then a TOML file, then the environment.

Command-line flags override the result (see `Settings.with_overrides`). Everything is
validated here, before any file or connection is opened, and an error names the key,
where its value came from, what was expected and what came.

File format (every key optional; durations as "500ms", "2s", "15m", "24h", "7d"):

    [ledger]
    lateness_window = "24h"     # older events at a position are refused as too_late
    max_clock_skew = "5m"       # events further ahead of the clock are refused
    clock = "auto"              # auto | wall | event  (auto: event for a file replay, wall for sim and --follow)

    [snapshots]
    dir = "var/snapshots"
    interval = "1s"             # at most one snapshot per interval
    retention = "7d"            # snapshots older than this are expired (as-of reads)
    maintenance_interval = "10m"
    catalog = ""                # "" = SQLite at DIR/catalog.sqlite; "postgres:dbname=... host=..." for a cluster
    writers = 1                 # snapshot writers sharing the catalog (one per process in a cluster)

    [runtime]
    workers = 1                 # Bytewax workers in this process
    process_id = 0              # this process in a cluster (0..N-1); with addresses
    addresses = ""              # "host:port;host:port": every process of the cluster, in process_id order
    epoch_interval = "10s"      # recovery snapshot cadence (each saves every position touched since the last)
    recovery = true             # resume after a crash from DIR/recovery

    [safety_stock]              # units held back from ATP; most specific wins: sku, site, kind
    default = 0
    by_kind = { STORE = 1 }
    by_site = { "ST-001" = 2 }
    by_sku = { "SKU-00001" = 0 }

    [sites]                     # site kinds, for safety stock by kind
    "DC-01" = "DC"

    [simulator]
    seed = 7
    rate = 2000                 # events per second
    stores = 20
    skus = 200
    network = ""                # a network file (docs/network.md) whose sites, lanes and routes the
                                # simulator uses instead of generated ones (then dcs, stores, ... unused)

    [kafka]                     # for --source kafka, `topics`, `produce`
    bootstrap = "127.0.0.1:19092"
    topic_prefix = ""           # prepended to inventory.events, inventory.events.dlq, atp.changes, ...
    partitions = 6              # for `omni-ledger topics create`
    replication = 1
    security_protocol = "PLAINTEXT"   # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism = "SCRAM-SHA-256"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username = ""
    sasl_password = ""          # never printed; prefer OMNI_LEDGER_KAFKA_SASL_PASSWORD
    ssl_ca_location = ""
    framing = "single-object"   # single-object | confluent (needs schema_registry_url)
    schema_registry_url = ""
    writer_schemas = ""         # comma-separated .avsc files: newer producer versions of InventoryEvent

    [serve]                     # `omni-ledger serve`: the HTTP API (and `demo`)
    host = "127.0.0.1"
    port = 8080
    network = "examples/network.toml"  # sites, lanes, routes, appointments (docs/network.md)
    bus = "file"                # file: confirms append to DIR/inbox.jsonl, which `run --follow` folds;
                                # kafka: confirms go to the inventory.events topic
    max_snapshot_age = "30s"    # older than this, reads answer 503
    confirm_timeout = "5s"      # how long a confirm waits for the fold's decision
    write_tokens = ""           # comma-separated bearer tokens that may confirm and act; prefer
                                # OMNI_LEDGER_SERVE_WRITE_TOKENS. Empty: writes are refused.
    read_tokens = ""            # tokens that may only read
    open_reads = true           # read endpoints need no token
    hold_days = 3               # how long a unit is held for the customer once it is ready

    [metrics]                   # Prometheus /metrics of `run` and `serve` (README: Operating it)
    host = "127.0.0.1"          # listen address; 0.0.0.0 to be scraped from another host
    port = 0                    # 0: no metrics server; else its TCP port (--metrics-port)

    [logging]
    format = "auto"             # auto | json | text  (auto: text on a terminal, else one JSON object a line)
    level = "INFO"              # DEBUG | INFO | WARNING | ERROR

Environment: OMNI_LEDGER_<SECTION>_<KEY>, e.g. OMNI_LEDGER_SNAPSHOTS_DIR,
OMNI_LEDGER_LEDGER_LATENESS_WINDOW, OMNI_LEDGER_SIMULATOR_RATE (scalars only).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from ledger.errors import ConfigError
from ledger.network import load_network
from ledger.policy import LedgerPolicy, SafetyStock
from omni_ledger.logs import FORMATS, LEVELS
from simulator import SimConfig

__all__ = [
    "KafkaSettings",
    "LoggingSettings",
    "MetricsSettings",
    "Secret",
    "ServeSettings",
    "Settings",
    "SimSettings",
    "load_settings",
    "parse_duration",
]

ClockChoice = Literal["auto", "wall", "event"]
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_KINDS = ("DC", "STORE", "SUPPLIER", "SELLER")


def parse_duration(value: object, where: str) -> timedelta:
    """'500ms', '2s', '15m', '24h', '7d' (or a number of seconds) as a timedelta."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)] / 1000
    else:
        msg = f"{where}: expected a duration like '500ms', '2s', '15m', '24h' or '7d', got {value!r}"
        raise ConfigError(msg)
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class SimSettings:
    """The built-in retailer simulator."""

    seed: int = 7
    rate: int = 2000
    dcs: int = 2
    stores: int = 20
    suppliers: int = 3
    sellers: int = 5
    skus: int = 200
    network: Path | None = None
    """A network file (docs/network.md) whose sites, lanes and routes the simulator uses; None: generated ones."""

    def sim_config(self, seed: int | None = None) -> SimConfig:
        """The simulator's config: this network, stocked for a day of demand at `rate`.

        Reads the network file, if any (a `ConfigError` names the key in the file).
        """
        return SimConfig(
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


class Secret:
    """A value that never shows in `repr` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one client that needs it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_FRAMINGS = ("single-object", "confluent")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """How to reach the Kafka cluster, and the topics' names and shapes."""

    bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = ""
    partitions: int = 6
    replication: int = 1
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-256"
    sasl_username: str = ""
    sasl_password: Secret = field(default_factory=lambda: Secret(""))
    ssl_ca_location: str = ""
    framing: str = "single-object"
    schema_registry_url: str = ""
    writer_schemas: tuple[Path, ...] = ()
    """Schemas other producers write single-object values with (say, one more optional field):
    their fingerprints are accepted and their values resolved to ours."""

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


_BUSES = ("file", "kafka")


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """The HTTP API and the promise it makes."""

    host: str = "127.0.0.1"
    port: int = 8080
    network: Path = Path("examples/network.toml")
    bus: str = "file"
    max_snapshot_age: timedelta = timedelta(seconds=30)
    confirm_timeout: timedelta = timedelta(seconds=5)
    write_tokens: tuple[Secret, ...] = ()
    read_tokens: tuple[Secret, ...] = ()
    open_reads: bool = True
    hold_days: int = 3


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where a long-running command (`run`, `serve`) serves Prometheus `/metrics`."""

    host: str = "127.0.0.1"
    port: int = 0
    """0: no metrics server."""


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """How log records are written to stderr."""

    format: str = "auto"
    """auto (text on a terminal, else json), json or text."""
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `omni-ledger run` needs, validated."""

    snapshot_dir: Path = Path("var/snapshots")
    snapshot_interval: timedelta = timedelta(seconds=1)
    snapshot_retention: timedelta = timedelta(days=7)
    maintenance_interval: timedelta = timedelta(minutes=10)
    lateness_window: timedelta = timedelta(hours=24)
    max_clock_skew: timedelta = timedelta(minutes=5)
    clock: ClockChoice = "auto"
    workers: int = 1
    # 10 s, not 1: each epoch saves every position it touched, and on 1M Kafka events the
    # flow ran 42% faster with 10 s epochs (11.6k vs 16.5k events/s, make bench, docs/scaling.md).
    epoch_interval: timedelta = timedelta(seconds=10)
    recovery: bool = True
    process_id: int = 0
    addresses: tuple[str, ...] = ()
    """Every process of a Bytewax cluster (`host:port`), in process-id order; empty: one process."""
    snapshot_catalog: str = ""
    """The DuckLake catalog: empty for SQLite in the snapshot directory, or `postgres:<libpq conninfo>`."""
    snapshot_writers: int = 1
    safety_stock: SafetyStock = field(default_factory=SafetyStock)
    simulator: SimSettings = field(default_factory=SimSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def policy(self) -> LedgerPolicy:
        """The fold's rules from these settings."""
        return LedgerPolicy(
            lateness_window_ms=int(self.lateness_window.total_seconds() * 1000),
            max_clock_skew_ms=int(self.max_clock_skew.total_seconds() * 1000),
            safety_stock=self.safety_stock,
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with command-line values applied (None means 'not given') and re-validated."""
        given = {k: v for k, v in changes.items() if v is not None}
        sim = {k: given.pop(k) for k in ("rate", "seed") if k in given}
        kafka = {k: given.pop(k) for k in ("bootstrap",) if k in given}
        serve = {k: given.pop(k) for k in ("host", "port", "network", "bus") if k in given}
        metrics = {k.removeprefix("metrics_"): given.pop(k) for k in ("metrics_host", "metrics_port") if k in given}
        logs = {k.removeprefix("log_"): given.pop(k) for k in ("log_format", "log_level") if k in given}
        out = replace(self, **given)
        if metrics:
            out = replace(out, metrics=replace(out.metrics, **metrics))
        if logs:
            out = replace(out, logging=replace(out.logging, **logs))
        if serve:
            out = replace(out, serve=replace(out.serve, **serve))
        if sim:
            out = replace(out, simulator=replace(out.simulator, **sim))
        if kafka:
            out = replace(out, kafka=replace(out.kafka, **kafka))
        _check(out, "command line")
        return out


def _check(s: Settings, origin: str) -> None:
    def fail(key: str, expected: str, got: object) -> None:
        msg = f"{key} ({origin}): expected {expected}, got {got!r}"
        raise ConfigError(msg)

    for key, value in (
        ("snapshots.interval", s.snapshot_interval),
        ("runtime.epoch_interval", s.epoch_interval),
        ("ledger.lateness_window", s.lateness_window),
        ("snapshots.retention", s.snapshot_retention),
        ("snapshots.maintenance_interval", s.maintenance_interval),
    ):
        if value <= timedelta(0):
            fail(key, "a positive duration", str(value))
    if s.clock not in ("auto", "wall", "event"):
        fail("ledger.clock", "one of auto, wall, event", s.clock)
    if not 1 <= s.workers <= 64:
        fail("runtime.workers", "an integer within 1..64", s.workers)
    for address in s.addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            fail("runtime.addresses", "'host:port;host:port' (semicolon-separated)", ";".join(s.addresses))
    if s.addresses and not 0 <= s.process_id < len(s.addresses):
        fail("runtime.process_id", f"an integer within 0..{len(s.addresses) - 1} (one per address)", s.process_id)
    if not s.addresses and s.process_id != 0:
        fail("runtime.process_id", "0 unless runtime.addresses lists the cluster", s.process_id)
    if s.snapshot_catalog and not s.snapshot_catalog.startswith("postgres:"):
        fail("snapshots.catalog", "empty (SQLite in the snapshot dir) or 'postgres:<conninfo>'", s.snapshot_catalog)
    if not 1 <= s.snapshot_writers <= 64:
        fail("snapshots.writers", "an integer within 1..64", s.snapshot_writers)
    if not 1 <= s.simulator.rate <= 10_000_000:
        fail("simulator.rate", "events per second within 1..10,000,000", s.simulator.rate)
    if s.simulator.network is not None:
        # Read now: a missing or broken file stops the command before anything starts.
        try:
            SimConfig(skus=s.simulator.skus, network=load_network(s.simulator.network))
        except ConfigError as exc:
            msg = f"simulator.network ({origin}): {exc}"
            raise ConfigError(msg) from exc
    k = s.kafka
    if not k.bootstrap.strip():
        fail("kafka.bootstrap", "host:port[,host:port...]", k.bootstrap)
    if k.security_protocol not in _PROTOCOLS:
        fail("kafka.security_protocol", f"one of {', '.join(_PROTOCOLS)}", k.security_protocol)
    if k.security_protocol.startswith("SASL"):
        if k.sasl_mechanism not in _MECHANISMS:
            fail("kafka.sasl_mechanism", f"one of {', '.join(_MECHANISMS)}", k.sasl_mechanism)
        if not k.sasl_username or not k.sasl_password:
            fail("kafka.sasl_username / kafka.sasl_password", f"both set for {k.security_protocol}", k.sasl_username)
    if k.framing not in _FRAMINGS:
        fail("kafka.framing", f"one of {', '.join(_FRAMINGS)}", k.framing)
    if k.framing == "confluent" and not k.schema_registry_url:
        fail("kafka.schema_registry_url", "a URL when kafka.framing is 'confluent'", k.schema_registry_url)
    for schema in k.writer_schemas:
        if not schema.is_file():
            fail("kafka.writer_schemas", "paths of existing .avsc files", str(schema))
    if not 1 <= k.partitions <= 10_000:
        fail("kafka.partitions", "an integer within 1..10,000", k.partitions)
    if not 1 <= k.replication <= 10:
        fail("kafka.replication", "an integer within 1..10", k.replication)
    v = s.serve
    if not 0 <= v.port <= 65_535:
        fail("serve.port", "a TCP port within 0..65535 (0: any free port)", v.port)
    if v.bus not in _BUSES:
        fail("serve.bus", f"one of {', '.join(_BUSES)}", v.bus)
    for key, value in (("serve.max_snapshot_age", v.max_snapshot_age), ("serve.confirm_timeout", v.confirm_timeout)):
        if value <= timedelta(0):
            fail(key, "a positive duration", str(value))
    if not 1 <= v.hold_days <= 60:
        fail("serve.hold_days", "an integer within 1..60", v.hold_days)
    if not 0 <= s.metrics.port <= 65_535:
        fail("metrics.port", "a TCP port within 0..65535 (0: no metrics server)", s.metrics.port)
    if not s.metrics.host.strip():
        fail("metrics.host", "a listen address such as 127.0.0.1", s.metrics.host)
    if s.logging.format not in FORMATS:
        fail("logging.format", f"one of {', '.join(FORMATS)}", s.logging.format)
    if s.logging.level.upper() not in LEVELS:
        fail("logging.level", f"one of {', '.join(LEVELS)}", s.logging.level)
    if {t.reveal() for t in v.write_tokens} & {t.reveal() for t in v.read_tokens}:
        fail("serve.read_tokens", "tokens distinct from serve.write_tokens", "a token in both")
    for token in (*v.write_tokens, *v.read_tokens):
        if len(token.reveal()) < 16:
            fail("serve.write_tokens / serve.read_tokens", "tokens of at least 16 characters", "a shorter token")


class _Reader:
    """Typed access to one TOML table, naming the key and origin in errors."""

    def __init__(self, table: Mapping[str, Any], section: str, origin: str) -> None:
        self.table, self.section, self.origin = table, section, origin

    def where(self, key: str) -> str:
        return f"{self.section}.{key} ({self.origin})"

    def get(self, key: str, kind: type, default: Any) -> Any:
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            msg = f"{self.where(key)}: expected an integer, got {value!r}"
            raise ConfigError(msg)
        if kind is bool and not isinstance(value, bool):
            msg = f"{self.where(key)}: expected true or false, got {value!r}"
            raise ConfigError(msg)
        if kind is str and not isinstance(value, str):
            msg = f"{self.where(key)}: expected a string, got {value!r}"
            raise ConfigError(msg)
        return value

    def duration(self, key: str, default: timedelta) -> timedelta:
        return parse_duration(self.table[key], self.where(key)) if key in self.table else default


_SECTIONS = {
    "ledger": {"lateness_window", "max_clock_skew", "clock"},
    "snapshots": {"dir", "interval", "retention", "maintenance_interval", "catalog", "writers"},
    "runtime": {"workers", "epoch_interval", "recovery", "process_id", "addresses"},
    "safety_stock": {"default", "by_kind", "by_site", "by_sku"},
    "sites": None,
    "simulator": {"seed", "rate", "dcs", "stores", "suppliers", "sellers", "skus", "network"},
    "kafka": {
        "bootstrap",
        "topic_prefix",
        "partitions",
        "replication",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "ssl_ca_location",
        "framing",
        "schema_registry_url",
        "writer_schemas",
    },
    "serve": {
        "host",
        "port",
        "network",
        "bus",
        "max_snapshot_age",
        "confirm_timeout",
        "write_tokens",
        "read_tokens",
        "open_reads",
        "hold_days",
    },
    "metrics": {"host", "port"},
    "logging": {"format", "level"},
}


def _from_tables(doc: Mapping[str, Any], origin: str, base: Settings, *, check: bool = True) -> Settings:
    for section, value in doc.items():
        if section not in _SECTIONS:
            msg = f"unknown section [{section}] ({origin}); expected one of {', '.join(_SECTIONS)}"
            raise ConfigError(msg)
        if not isinstance(value, dict):
            msg = f"[{section}] ({origin}) must be a table"
            raise ConfigError(msg)
        allowed = _SECTIONS[section]
        if allowed is not None and (unknown := sorted(set(value) - allowed)):
            msg = f"unknown key {section}.{unknown[0]} ({origin}); expected one of {', '.join(sorted(allowed))}"
            raise ConfigError(msg)
    led = _Reader(doc.get("ledger", {}), "ledger", origin)
    snap = _Reader(doc.get("snapshots", {}), "snapshots", origin)
    run = _Reader(doc.get("runtime", {}), "runtime", origin)
    ss = _Reader(doc.get("safety_stock", {}), "safety_stock", origin)
    sim = _Reader(doc.get("simulator", {}), "simulator", origin)
    kaf = _Reader(doc.get("kafka", {}), "kafka", origin)
    sites = doc.get("sites", {})
    for site, kind in sites.items():
        if kind not in _KINDS:
            msg = f"sites.{site} ({origin}): expected one of {', '.join(_KINDS)}, got {kind!r}"
            raise ConfigError(msg)
    old_ss = base.safety_stock

    def table(key: str, current: Mapping[str, int]) -> dict[str, int]:
        value = ss.get(key, dict, None)
        if value is None:
            return dict(current)
        if not isinstance(value, dict):
            msg = f"{ss.where(key)}: expected a table of units, got {value!r}"
            raise ConfigError(msg)
        return dict(value)

    safety = SafetyStock(
        default=ss.get("default", int, old_ss.default),
        by_sku=table("by_sku", old_ss.by_sku),
        by_site=table("by_site", old_ss.by_site),
        by_kind=table("by_kind", old_ss.by_kind),
        site_kinds={**old_ss.site_kinds, **sites},
    )
    old_sim = base.simulator
    sizes = (_SECTIONS["simulator"] or set()) - {"network"}
    network = sim.get("network", str, None)
    simulator = SimSettings(
        **{name: sim.get(name, int, getattr(old_sim, name)) for name in sizes},
        # An empty path (OMNI_LEDGER_SIMULATOR_NETWORK="") is the generated network.
        network=old_sim.network if network is None else Path(network) if network.strip() else None,
    )
    old_k = base.kafka
    password = kaf.get("sasl_password", str, None)
    kafka = KafkaSettings(
        bootstrap=kaf.get("bootstrap", str, old_k.bootstrap),
        topic_prefix=kaf.get("topic_prefix", str, old_k.topic_prefix),
        partitions=kaf.get("partitions", int, old_k.partitions),
        replication=kaf.get("replication", int, old_k.replication),
        security_protocol=kaf.get("security_protocol", str, old_k.security_protocol),
        sasl_mechanism=kaf.get("sasl_mechanism", str, old_k.sasl_mechanism),
        sasl_username=kaf.get("sasl_username", str, old_k.sasl_username),
        sasl_password=Secret(password) if password is not None else old_k.sasl_password,
        ssl_ca_location=kaf.get("ssl_ca_location", str, old_k.ssl_ca_location),
        framing=kaf.get("framing", str, old_k.framing),
        schema_registry_url=kaf.get("schema_registry_url", str, old_k.schema_registry_url),
        writer_schemas=_paths(kaf.get("writer_schemas", str, None), old_k.writer_schemas),
    )
    srv = _Reader(doc.get("serve", {}), "serve", origin)
    old_v = base.serve
    serve = ServeSettings(
        host=srv.get("host", str, old_v.host),
        port=srv.get("port", int, old_v.port),
        network=Path(srv.get("network", str, str(old_v.network))),
        bus=srv.get("bus", str, old_v.bus),
        max_snapshot_age=srv.duration("max_snapshot_age", old_v.max_snapshot_age),
        confirm_timeout=srv.duration("confirm_timeout", old_v.confirm_timeout),
        write_tokens=_secrets(srv.get("write_tokens", str, None), old_v.write_tokens),
        read_tokens=_secrets(srv.get("read_tokens", str, None), old_v.read_tokens),
        open_reads=srv.get("open_reads", bool, old_v.open_reads),
        hold_days=srv.get("hold_days", int, old_v.hold_days),
    )
    met = _Reader(doc.get("metrics", {}), "metrics", origin)
    logs = _Reader(doc.get("logging", {}), "logging", origin)
    out = Settings(
        snapshot_dir=Path(snap.get("dir", str, str(base.snapshot_dir))),
        snapshot_interval=snap.duration("interval", base.snapshot_interval),
        snapshot_retention=snap.duration("retention", base.snapshot_retention),
        maintenance_interval=snap.duration("maintenance_interval", base.maintenance_interval),
        lateness_window=led.duration("lateness_window", base.lateness_window),
        max_clock_skew=led.duration("max_clock_skew", base.max_clock_skew),
        clock=led.get("clock", str, base.clock),
        workers=run.get("workers", int, base.workers),
        epoch_interval=run.duration("epoch_interval", base.epoch_interval),
        recovery=run.get("recovery", bool, base.recovery),
        process_id=run.get("process_id", int, base.process_id),
        addresses=_addresses(run.get("addresses", str, None), base.addresses),
        snapshot_catalog=snap.get("catalog", str, base.snapshot_catalog),
        snapshot_writers=snap.get("writers", int, base.snapshot_writers),
        safety_stock=safety,
        simulator=simulator,
        kafka=kafka,
        serve=serve,
        metrics=MetricsSettings(
            host=met.get("host", str, base.metrics.host), port=met.get("port", int, base.metrics.port)
        ),
        logging=LoggingSettings(
            format=logs.get("format", str, base.logging.format), level=logs.get("level", str, base.logging.level)
        ),
    )
    if check:
        _check(out, origin)
    return out


def _secrets(value: str | None, current: tuple[Secret, ...]) -> tuple[Secret, ...]:
    if value is None:
        return current
    return tuple(Secret(t.strip()) for t in value.split(",") if t.strip())


def _addresses(value: str | None, current: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return current
    return tuple(a.strip() for a in value.split(";") if a.strip())


def _paths(value: str | None, current: tuple[Path, ...]) -> tuple[Path, ...]:
    if value is None:
        return current
    return tuple(Path(p.strip()) for p in value.split(",") if p.strip())


def _env_tables(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for section, keys in _SECTIONS.items():
        for key in keys or ():
            name = f"OMNI_LEDGER_{section}_{key}".upper()
            if name in environ:
                raw = environ[name]
                value: Any = raw
                if key in {
                    "workers",
                    "process_id",
                    "writers",
                    "seed",
                    "rate",
                    "dcs",
                    "stores",
                    "suppliers",
                    "sellers",
                    "skus",
                    "default",
                    "partitions",
                    "replication",
                    "port",
                    "hold_days",
                }:
                    try:
                        value = int(raw)
                    except ValueError:
                        msg = f"{name} (environment): expected an integer, got {raw!r}"
                        raise ConfigError(msg) from None
                elif key in ("recovery", "open_reads"):
                    value = raw.strip().lower() in {"1", "true", "yes", "on"}
                tables.setdefault(section, {})[key] = value
    return tables


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the TOML file at `path` (if given), then OMNI_LEDGER_* variables."""
    settings = Settings()
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            msg = f"cannot read config file {path}: {exc.strerror}; pass an existing file to --config"
            raise ConfigError(msg) from exc
        except tomllib.TOMLDecodeError as exc:
            msg = f"config file {path} is not valid TOML: {exc}"
            raise ConfigError(msg) from exc
        # Checked once the environment is applied too: a file may leave the password to
        # OMNI_LEDGER_KAFKA_SASL_PASSWORD, as it should.
        settings = _from_tables(doc, f"file {path}", settings, check=False)
    env = _env_tables(os.environ if environ is None else environ)
    if env:
        settings = _from_tables(env, "environment", settings, check=False)
    _check(
        settings,
        " + ".join(o for o in (f"file {path}" if path else "", "environment" if env else "") if o) or "defaults",
    )
    return settings
