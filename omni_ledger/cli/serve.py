"""The commands around the HTTP API: serve, up, people, demo, open-slots and sim-network."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ledger.errors import ConfigError
from omni_ledger import logs
from omni_ledger.cli.common import emit, settings_of

__all__ = ["cmd_demo", "cmd_open_slots", "cmd_people", "cmd_serve", "cmd_sim_network", "cmd_up"]

_LOG = logging.getLogger("omni_ledger.cli")


def cmd_serve(args: argparse.Namespace) -> int:
    """`omni-ledger serve`: the HTTP API: availability, promise, confirm, tasks, loads."""
    from omni_ledger.metrics import serve_metrics
    from omni_ledger.serving import serve

    settings = settings_of(args).with_overrides(host=args.host, port=args.port, network=args.network, bus=args.bus)
    logs.set_context(command="serve")
    _wait_for_snapshot_dir(settings.snapshot_dir)
    base = f"http://{settings.serve.host}:{settings.serve.port}"
    _LOG.info(
        "serving %s: console at %s/console/, OpenAPI at %s/docs (confirms go to the %s bus)",
        settings.snapshot_dir.resolve(),
        base,
        base,
        settings.serve.bus,
    )
    max_age = settings.serve.max_snapshot_age
    try:
        with serve_metrics(settings.metrics.host, settings.metrics.port, command="serve", max_snapshot_age=max_age):
            serve(settings, workers=args.workers)
    except KeyboardInterrupt:
        # uvicorn shut down cleanly, then re-raised the signal: a Ctrl-C is the normal way to stop.
        _LOG.info("server stopped")
    return 0


_SNAPSHOT_DIR_WAIT_S = 15.0


def _wait_for_snapshot_dir(directory: Path) -> None:
    """Return once `directory` exists; a ConfigError if it does not come.

    Never created here: a mistyped directory would be served empty forever while the flow
    writes elsewhere. A flow started at the same time (`make stack`) creates it within
    seconds, so a directory whose parent exists is waited for, briefly.
    """
    deadline = time.monotonic() + (_SNAPSHOT_DIR_WAIT_S if directory.parent.is_dir() else 0.0)
    while not directory.is_dir():
        if time.monotonic() >= deadline:
            msg = (
                f"--snapshot-dir {directory}: no such directory; pass the directory the flow writes "
                "(omni-ledger run --snapshot-dir DIR), or start everything at once with `make run`"
            )
            raise ConfigError(msg)
        time.sleep(0.2)


def cmd_up(args: argparse.Namespace) -> int:
    """`omni-ledger up`: the simulated retailer's flow, the API and console, and simulated people, together."""
    from omni_ledger.embedded import http_ok, live_retailer, prepare_live_retailer
    from omni_ledger.supervisor import Supervisor

    settings = settings_of(args).with_overrides(host=args.host, port=args.port, rate=args.rate)
    logs.set_context(command="up")
    network_file = args.network_out or settings.snapshot_dir / "network.toml"
    opened = prepare_live_retailer(settings, network_file, reset=args.reset)
    system = live_retailer(
        settings,
        network_file=network_file,
        config_file=args.config,
        people=not args.no_people,
        flow_metrics_port=args.flow_metrics_port,
        api_metrics_port=args.api_metrics_port,
        # The parts write to a pipe: they log as this command does, not as a pipe's reader would want.
        log_format=logs.active_format(),
        customer_every=args.customer_every,
    )
    names = ", ".join(part.name for part in system.parts)
    _LOG.info("starting %s over %s (%d appointment slots opened)", names, settings.snapshot_dir.resolve(), opened)
    sign_in = (
        f"sign in with the write token {system.token}"
        if system.token
        else "sign in with a token from OMNI_LEDGER_SERVE_WRITE_TOKENS"
    )

    def banner() -> None:
        lines = [
            f"omni-ledger is up: console at {system.console_url} ({sign_in})",
            f"  API at {system.console_url.removesuffix('/console/')}/docs",
            f"  Prometheus metrics at {', '.join(system.metrics_urls) or 'none'}",
            f"  snapshots in {settings.snapshot_dir.resolve()}; Ctrl-C stops every part",
        ]
        for line in lines:
            print(line, file=sys.stderr, flush=True)

    supervisor = Supervisor(system.parts, stop_timeout=args.stop_timeout)
    asked = [0.0]

    def ready() -> bool:
        # Once a second at most: each probe is a line in the API's log.
        if time.monotonic() - asked[0] < 1.0:
            return False
        asked[0] = time.monotonic()
        return http_ok(system.health_url, timeout=1.0)

    code = supervisor.run(ready=ready, on_ready=banner)
    if supervisor.failed is not None:
        _LOG.error("stopped because the %s part failed (exit code %d); see its output above", supervisor.failed, code)
        return 1
    _LOG.info("every part stopped")
    return 0


def cmd_people(args: argparse.Namespace) -> int:
    """`omni-ledger people`: simulated customers, clerks and drivers acting on a running API."""
    from adapters.network_file import load_network
    from adapters.shutdown import StopFlag, install_interrupt_handler
    from omni_ledger.people import People, PeopleConfig

    settings = settings_of(args).with_overrides(network=args.network)
    token = os.environ.get("OMNI_LEDGER_PEOPLE_TOKEN", "").strip()
    if not token:
        msg = "OMNI_LEDGER_PEOPLE_TOKEN is not set: give the people one of the API's write tokens"
        raise ConfigError(msg)
    config = PeopleConfig(
        url=args.url, token=token, seed=args.seed, customer_every=args.customer_every, leave_every=args.leave_every
    )
    people = People(config, load_network(settings.serve.network))
    logs.set_context(command="people")
    left = ", ".join(sorted(people.left_to_people)) or "none"
    _LOG.info("customers, clerks and drivers acting on %s; stores left to a person in the console: %s", args.url, left)
    stop = StopFlag()
    install_interrupt_handler(stop)
    people.run(stop)
    _LOG.info("people stopped: %s", json.dumps(people.done))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`omni-ledger demo`: Mme Martin's visit, end to end through the real fold."""
    from omni_ledger.demo import run_demo

    run_demo(args.dir, args.network, as_json=args.json)
    return 0


def cmd_open_slots(args: argparse.Namespace) -> int:
    """`omni-ledger open-slots`: open stores' appointment capacity for the coming days."""
    import time

    from adapters.network_file import load_network
    from ledger.confirm import open_slots_events
    from ledger.network import DAY_MS
    from omni_ledger.serving import open_inbox

    if not 1 <= args.days <= 60:
        msg = f"--days must be within 1..60, got {args.days}"
        raise ConfigError(msg)
    settings = settings_of(args).with_overrides(network=args.network, bus=args.bus)
    network = load_network(settings.serve.network)
    now = time.time_ns() // 1_000_000
    events = open_slots_events(network, now, now + args.days * DAY_MS, now)
    inbox = open_inbox(settings)
    try:
        inbox.send(events)
    finally:
        inbox.close()
    stores = len({e.site_id for e in events})
    rows = [{"events": len(events), "stores": stores, "days": args.days, "sent_to": inbox.description}]
    emit(args, rows, ("events", "stores", "days", "sent_to"))
    return 0


def cmd_sim_network(args: argparse.Namespace) -> int:
    """`omni-ledger sim-network`: the simulator's network as a network file, for serve --network."""
    from simulator.network import network_toml, simulated_network

    settings = settings_of(args).simulator
    network = simulated_network(settings.sim_config())
    source = f"the network file {settings.network}" if settings.network else "the simulator's generated sites"
    text = network_toml(network, title=f"The simulator's network ({source}), written by `omni-ledger sim-network`.")
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        msg = f"--out {args.out}: cannot write the network file: {exc.strerror}; pass a writable path"
        raise ConfigError(msg) from exc
    sizes = len(network.sites), len(network.lanes)
    _LOG.info("wrote the simulator's network to %s (%d sites, %d lanes)", args.out, *sizes)
    return 0
