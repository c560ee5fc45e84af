"""`omni-ledger run`: fold events into ATP and publish snapshots, alone or as one process of a cluster."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO, cast

from omni_ledger import logs
from omni_ledger.cli.common import settings_of
from omni_ledger.config import parse_duration
from omni_ledger.table import render_table

if TYPE_CHECKING:
    from adapters.shutdown import StopFlag


__all__ = ["cmd_run"]

_LOG = logging.getLogger("omni_ledger.cli")


def cmd_run(args: argparse.Namespace) -> int:
    """`omni-ledger run`: fold events into ATP and publish snapshots."""
    from adapters.shutdown import StopFlag, install_interrupt_handler
    from omni_ledger.bootstrap import plan_run, reset_store
    from omni_ledger.metrics import flow_metrics, serve_metrics
    from omni_ledger.progress import Progress, ProgressPrinter
    from omni_ledger.runner import run

    settings = settings_of(args).with_overrides(
        bootstrap=args.bootstrap,
        rate=args.rate,
        seed=args.seed,
        clock=args.clock,
        workers=args.workers,
        process_id=args.process_id,
        addresses=tuple(a.strip() for a in args.addresses.split(";") if a.strip()) if args.addresses else None,
        snapshot_writers=args.snapshot_writers,
        recovery=False if args.no_recovery else None,
        snapshot_interval=parse_duration(args.snapshot_interval, "--snapshot-interval")
        if args.snapshot_interval
        else None,
        lateness_window=parse_duration(args.lateness_window, "--lateness-window") if args.lateness_window else None,
    )
    if args.reset:
        reset_store(settings.snapshot_dir)
    progress = Progress()
    stop = StopFlag()
    # Always counted (about 1.3 us per event on the worker), so logs and the summary do not
    # depend on whether a metrics server is asked for.
    metrics = flow_metrics()
    plan = plan_run(
        args.source,
        settings,
        progress,
        follow=args.follow,
        limit=args.limit,
        stop=stop,
        until_end=args.until_end,
        metrics=metrics,
    )
    install_interrupt_handler(stop)
    directory = settings.snapshot_dir.resolve()
    cluster = len(settings.addresses) > 0
    logs.set_context(command="run", flow="omni_ledger_atp", process_id=settings.process_id if cluster else None)
    _LOG.info(
        "reading %s (Ctrl-C ends the input and publishes a last snapshot)",
        plan.description,
        extra={"source": args.source, "workers": settings.workers},
    )
    _LOG.info(
        "snapshots in %s (query: omni-ledger atp --sku SKU --snapshot-dir %s)",
        directory,
        directory,
        extra={"snapshot_dir": str(directory)},
    )
    interrupted = False
    max_age = settings.serve.max_snapshot_age
    structured = logging.getLogger("omni_ledger.progress") if logs.active_format() == "json" else None
    try:
        with (
            serve_metrics(settings.metrics.host, settings.metrics.port, command="run", max_snapshot_age=max_age),
            _signals_while_joining(stop) if cluster else contextlib.nullcontext(),
        ):
            if args.quiet:
                run(plan)
            else:
                # In a cluster each process prints its own line: its figures are what its workers did.
                stream = cast(TextIO, _Prefixed(sys.stderr, f"[process {settings.process_id}] ")) if cluster else None
                with ProgressPrinter(progress, log=structured, stream=stream):
                    run(plan)
    except KeyboardInterrupt:
        interrupted = True
    summary = {
        **progress.summary(),
        "snapshot_dir": str(directory),
        "stopped_by_signal": stop.is_set(),
        "interrupted": interrupted,
    }
    if cluster:
        # Events applied and snapshots are counted where the snapshot writer runs, decisions
        # and dead letters where their file's writer runs: one process of the cluster each.
        summary |= {"process_id": settings.process_id, "processes": len(settings.addresses)}
    if args.json:
        print(json.dumps(summary))
    else:
        rows = [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in summary.items()]
        print(render_table(("figure", "value"), rows))
    return 0


_SIGNAL_GRACE_S = 5.0


@contextlib.contextmanager
def _signals_while_joining(stop: StopFlag) -> Iterator[None]:
    """Exit at once on SIGINT/SIGTERM that the main thread cannot take: it waits for the cluster.

    While a process waits for the other processes of its cluster to join, Bytewax holds
    the main thread in Rust, so Python's signal handler (which ends the input, see
    adapters/shutdown.py) cannot run: Ctrl-C or a SIGTERM (Kubernetes stopping a pod)
    would be ignored until the others come. The signal still reaches this wake-up
    socket; if the handler has not run within a few seconds, nothing has started that a
    graceful stop could save, and the process exits. Once the dataflow runs, Bytewax
    checks for signals every millisecond and the handler runs as usual.
    """
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            try:
                received = reader.recv(16)
            except OSError:
                return
            if not received:
                return
            deadline = time.monotonic() + _SIGNAL_GRACE_S
            while not stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not stop.is_set():
                signum = received[-1]
                _LOG.error(
                    "stopped by %s while waiting for the other processes of the cluster to join",
                    signal.Signals(signum).name,
                )
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os._exit(128 + signum)

    watcher = threading.Thread(target=watch, name="omni-ledger-signal-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        writer.close()
        reader.close()


class _Prefixed:
    """A text stream that starts every line written to it with `prefix`."""

    def __init__(self, stream: Any, prefix: str) -> None:
        self._stream = stream
        self._prefix = prefix

    def write(self, text: str) -> int:
        lines = text.splitlines(keepends=True)
        return self._stream.write("".join(self._prefix + line if line.strip() else line for line in lines))  # type: ignore[no-any-return]

    def flush(self) -> None:
        self._stream.flush()
