"""The promise service on Kafka: a confirm is produced to the input topic and answered from reservation.decisions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.avro_wire import WireCodec
from adapters.kafka_io import EventProducer
from adapters.snapshot_store import SnapshotReader
from ledger.errors import SnapshotError
from omni_ledger.config import KafkaSettings, ServeSettings, Settings, SnapshotSettings
from omni_ledger.serving import open_service
from tests.api_stack import LYON, NETWORK, seed_events
from tests.conftest import REPO, interrupt, run_cli

pytestmark = pytest.mark.integration


def wait_applied(directory: Path, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with SnapshotReader.open(directory) as reader:
                latest = reader.latest()
            if latest is not None and int(latest["events_applied"]) >= count:  # type: ignore[call-overload]
                return
        except SnapshotError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no snapshot with {count} events applied in {directory} within {timeout} s")


def test_a_confirm_over_kafka_is_decided_by_the_fold_and_opens_the_far_stores_task(kafka, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env = {
        "OMNI_LEDGER_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "OMNI_LEDGER_KAFKA_TOPIC_PREFIX": prefix,
        "OMNI_LEDGER_KAFKA_PARTITIONS": "3",
    }
    created = run_cli("topics", "create", "--json", env=env)
    assert created.returncode == 0, created.stderr
    now = time.time_ns() // 1_000_000
    seed = seed_events(now)
    producer = EventProducer({"bootstrap.servers": kafka.bootstrap}, prefix + "inventory.events")
    codec = WireCodec()
    for event in seed:
        producer.send(f"{event.site_id}|{event.sku}".encode(), codec.encode(event))
    producer.flush()
    directory = tmp_path / "store"
    log = (tmp_path / "flow.log").open("wb")
    flow = subprocess.Popen(
        [sys.executable, "-m", "omni_ledger", "run", "--source", "kafka", "--snapshot-dir", str(directory),
         "--snapshot-interval", "200ms", "--quiet"],
        cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_applied(directory, len(seed))
        settings = Settings(
            snapshots=SnapshotSettings(dir=directory),
            kafka=KafkaSettings(bootstrap=kafka.bootstrap, topic_prefix=prefix),
            serve=ServeSettings(network=NETWORK, bus="kafka", confirm_timeout=timedelta(seconds=30)),
        )
        with open_service(settings) as service:
            offered = service.promise({"PHONE-B": 1}, **LYON)
            choice = next(
                o for o in offered.options if o.source_id == "STORE-VIENNE" and o.mode.value == "TRANSFER_TO_STORE"
            )
            first = service.confirm({"PHONE-B": 1}, choice.option_id, **LYON, customer="Martin")
            assert (first.status, first.reason) == ("ACCEPTED", "atp_sufficient")
            assert first.decision["site_id"] == "STORE-VIENNE"

            def task_opened() -> bool:
                service.store.refresh()
                tasks = service.tasks("STORE-VIENNE", "OPEN")["tasks"]
                return any(t["reservation_id"] == first.reservation_id for t in tasks)

            deadline = time.monotonic() + 30
            while not task_opened():
                assert time.monotonic() < deadline, "the far store's task never reached the snapshot"
                time.sleep(0.2)
            # The unit is gone from Vienne: the same option is now refused by the fold or no longer offered.
            again = service.promise({"PHONE-B": 1}, **LYON)
            assert all(o.source_id != "STORE-VIENNE" for o in again.options)
    finally:
        interrupt(flow)
        log.close()
    assert flow.returncode == 0, (tmp_path / "flow.log").read_text()[-3000:]
