"""Pytest plugin: a real Apache Kafka broker for the tests that need one.

Registered with `pytest_plugins = ["tests.kafka_broker"]` (or `-p tests.kafka_broker`). Fixtures:

- `kafka` (session): a `KafkaBroker`. With `KAFKA_BOOTSTRAP_SERVERS` set, that broker
  (plus `KAFKA_SASL_BOOTSTRAP_SERVERS`, `KAFKA_SASL_USER`, `KAFKA_SASL_PASSWORD` if set);
  otherwise a private broker started once per session by `infra/kafka/broker.py up
  --free-ports` in a temporary directory and stopped at the end. Without Java 17+ and
  Maven the tests that use it are skipped with the reason; under `CI=true` they fail
  instead, since CI must run them.
- `topic_factory` (function): `topic_factory(partitions=1, prefix="test") -> name` creates
  a topic with a unique name and deletes it after the test.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

BROKER_SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "kafka" / "broker.py"
# A cold machine fetches ~45 MB of jars with Maven first (broker.py bounds that at 600 s),
# then waits at most 90 s for the broker; this bounds the whole `up`.
UP_TIMEOUT_S = 720
DOWN_TIMEOUT_S = 60
TOPIC_TIMEOUT_S = 30
LOG = logging.getLogger("tests.kafka")


@dataclass(frozen=True)
class KafkaBroker:
    """Where the tests' broker listens. `sasl_*` are None when an external broker has no SASL listener."""

    bootstrap: str
    sasl_bootstrap: str | None
    user: str | None
    password: str | None

    def config(self) -> dict[str, Any]:
        """librdkafka settings for the PLAINTEXT listener; add `group.id` and the like."""
        return {"bootstrap.servers": self.bootstrap, "logger": LOG}

    def sasl_config(self, mechanism: str = "SCRAM-SHA-256", password: str | None = None) -> dict[str, Any]:
        """librdkafka settings for the SASL_PLAINTEXT listener as the SCRAM user (`password` overrides)."""
        if self.sasl_bootstrap is None or self.user is None:
            raise RuntimeError("this broker has no SASL listener: set KAFKA_SASL_BOOTSTRAP_SERVERS and KAFKA_SASL_USER")
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": self.user,
            "sasl.password": self.password if password is None else password,
            "logger": LOG,
        }


def broker_unavailable(reason: str) -> NoReturn:
    """Skip, loudly, on a developer's machine; fail under CI=true, where these tests must run."""
    message = f"NO KAFKA BROKER: {reason}"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(
            f"{message}\n(CI=true: these tests must run in CI, so they fail instead of skipping)", pytrace=False
        )
    pytest.skip(
        f"{message}\nInstall Java 17+ and Maven (the broker comes from Maven Central), "
        "or point KAFKA_BOOTSTRAP_SERVERS at a broker."
    )


def _broker_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # Any python3 runs the script (stdlib only); this one is at hand.
    return subprocess.run(
        [sys.executable, str(BROKER_SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _env(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None


def _stop(directory: Path) -> None:
    try:
        out = _broker_script("down", "--dir", str(directory), timeout=DOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        warnings.warn(f"stopping the test Kafka broker in {directory} timed out", stacklevel=2)
        return
    if out.returncode != 0:
        warnings.warn(f"stopping the test Kafka broker in {directory} failed: {out.stderr.strip()}", stacklevel=2)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's broker: the one named by KAFKA_BOOTSTRAP_SERVERS, else a private one."""
    external = _env("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield KafkaBroker(
            external, _env("KAFKA_SASL_BOOTSTRAP_SERVERS"), _env("KAFKA_SASL_USER"), _env("KAFKA_SASL_PASSWORD")
        )
        return

    directory = tmp_path_factory.mktemp("kafka")
    # --stop-with-pid: a watchdog stops the broker if this test run dies without its teardown.
    command = ("up", "--free-ports", "--dir", str(directory), "--json", "--stop-with-pid", str(os.getpid()))
    started = time.monotonic()
    try:
        out = _broker_script(*command, timeout=UP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stop(directory)
        broker_unavailable(f"`broker.py up` did not finish within {UP_TIMEOUT_S} s (its data: {directory})")
    if out.returncode != 0:
        _stop(directory)  # in case it got as far as starting a process
        broker_unavailable(f"`broker.py up` exited with {out.returncode}:\n{out.stderr.strip()}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    LOG.info("Kafka broker up in %.1f s: %s", time.monotonic() - started, info)
    try:
        yield KafkaBroker(info["bootstrap"], info["sasl_bootstrap"], info["user"], info["password"])
    finally:
        _stop(directory)


def _wait_for_leaders(admin: AdminClient, topic: str, partitions: int) -> None:
    """Creation returns once the controller committed it; wait until the broker serves every partition too."""
    deadline = time.monotonic() + TOPIC_TIMEOUT_S
    while True:
        metadata = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if (
            metadata is not None
            and metadata.error is None
            and len(metadata.partitions) == partitions
            and all(p.leader >= 0 for p in metadata.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no leader for every partition after {TOPIC_TIMEOUT_S} s")
        time.sleep(0.1)


@pytest.fixture
def topic_factory(kafka: KafkaBroker) -> Iterator[Callable[..., str]]:
    """`create(partitions=1, prefix="test") -> name`: a fresh topic, deleted after the test."""
    admin = AdminClient(kafka.config())
    created: list[str] = []

    def create(partitions: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        # replication_factor=-1: the broker's default (1 on ours, whatever an external one uses).
        topic = NewTopic(name, num_partitions=partitions, replication_factor=-1)
        futures = admin.create_topics([topic], request_timeout=TOPIC_TIMEOUT_S)
        futures[name].result(timeout=TOPIC_TIMEOUT_S)
        created.append(name)
        _wait_for_leaders(admin, name, partitions)
        return name

    yield create

    if created:
        for name, future in admin.delete_topics(created, request_timeout=TOPIC_TIMEOUT_S).items():
            try:
                future.result(timeout=TOPIC_TIMEOUT_S)
            except Exception as exc:  # a leftover topic is untidy, not a failed test
                warnings.warn(f"could not delete test topic {name}: {exc}", stacklevel=2)
