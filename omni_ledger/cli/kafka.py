"""The Kafka commands: `topics` (create or list them) and `produce` (events into the input topic)."""

from __future__ import annotations

import argparse
import json

from omni_ledger.cli.common import emit, settings_of
from omni_ledger.table import render_table

__all__ = ["cmd_produce", "cmd_topics"]


def cmd_topics(args: argparse.Namespace) -> int:
    """`omni-ledger topics`: create or list the Kafka topics."""
    from adapters.kafka_io import TOPICS, KafkaAdmin

    kafka = settings_of(args).with_overrides(bootstrap=args.bootstrap).kafka
    admin = KafkaAdmin(kafka.client_config())
    names = [kafka.topic(name) for name in TOPICS]
    if args.action == "create":
        configs = {kafka.topic(name): config for name, config in TOPICS.items()}
        outcome = admin.create(names, configs, args.partitions or kafka.partitions, kafka.replication)
        existing = admin.topics()
        rows = [{"topic": n, "outcome": outcome[n], "partitions": existing.get(n)} for n in names]
    else:
        existing = admin.topics()
        rows = [
            {"topic": n, "partitions": existing.get(n), "outcome": "present" if n in existing else "missing"}
            for n in names
        ]
    emit(args, rows, ("topic", "partitions", "outcome"), f"Kafka at {kafka.bootstrap}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    """`omni-ledger produce`: load events into the Kafka input topic."""
    from omni_ledger.producing import produce_file, produce_simulator

    settings = settings_of(args).with_overrides(bootstrap=args.bootstrap, rate=args.rate)
    if args.file is not None:
        report = produce_file(settings.kafka, args.file, raw=args.raw)
    else:
        from adapters.shutdown import StopFlag, install_interrupt_handler

        stop = StopFlag()
        install_interrupt_handler(stop)
        report = produce_simulator(settings, limit=args.limit, stop=stop, seed=args.seed)
    if args.json:
        print(json.dumps(report))
    else:
        print(render_table(("figure", "value"), list(report.items())))
    return 0
