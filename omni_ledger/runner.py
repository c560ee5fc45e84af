"""Runs a planned flow in this process: recovery first, then Bytewax, alone or in a cluster.

Before Bytewax starts, `run` creates the recovery partitions once for the whole cluster,
discards what a crashed run saved for an epoch that never completed, and checks that
this process can listen on its cluster address. While it runs, what our sources and sinks
raise is kept (adapters/partitions.py) so that the error reported is ours, not Bytewax's.
The plan itself (which source, which sinks) is `omni_ledger.bootstrap`'s.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from bytewax.inputs import Source
from bytewax.outputs import Sink
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from adapters.partitions import FirstError, guarded
from adapters.recovery import discard_uncommitted
from adapters.shard_checkpoints import SHARDS_DIR, write_layout
from flows.atp import Wiring, build_flow
from ledger.errors import ConfigError, OmniLedgerError
from ledger.shard import DEFAULT_SHARDS
from omni_ledger.bootstrap import RunPlan
from omni_ledger.collector import tune_collector
from omni_ledger.config import Settings

__all__ = ["run"]

_LOG = logging.getLogger("omni_ledger.run")


def _init_recovery(recovery_dir: Path, partitions: int, shards: int = DEFAULT_SHARDS) -> None:
    """Create Bytewax's recovery partitions once, even if every process of a cluster tries at once.

    Each process that finds no recovery directory builds a complete one under a private
    name and renames it into place: a rename onto an existing non-empty directory fails,
    so the first complete one wins and the others discard theirs. No process ever sees a
    half-initialised directory (Bytewax would take a missing partition file for a missing
    partition). The count is the cluster's total workers; a later run may use any number
    of workers or processes on the same partitions (Bytewax routes state to them).
    """
    if recovery_dir.exists():
        return
    staging = recovery_dir.with_name(f"{recovery_dir.name}.init-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        init_db_dir(staging, partitions)  # type: ignore[no-untyped-call]  # untyped in bytewax 0.21.1
        # The shard count goes in with the partitions: a store never exists without it.
        write_layout(staging / SHARDS_DIR, shards)
        try:
            staging.rename(recovery_dir)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not recovery_dir.is_dir():
                raise
            # Another process of the cluster was first: use its partitions.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_addresses(settings: Settings) -> None:
    """Fail now, with advice, if this process cannot listen on its own cluster address; warn of unknown peers.

    Bytewax would otherwise panic deep in its network setup, or wait forever.
    """
    addresses = settings.addresses
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        msg = f"runtime.addresses lists {', '.join(duplicates)} more than once: each process needs its own host:port"
        raise ConfigError(msg)
    own = addresses[settings.process_id]
    host, _, port = own.rpartition(":")
    host = host.strip("[]")
    where = f"{own} (process {settings.process_id} of --addresses {';'.join(addresses)})"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        msg = f"cannot resolve {where}: {exc.strerror}"
        raise ConfigError(msg) from exc
    family, kind, proto, _canon, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As Bytewax's listener does: a port left in TIME_WAIT by a previous run is fine.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                msg = (
                    f"cannot listen on {where}: the port is in use. Another program holds it, a previous run "
                    f"of this process is still running, or two processes were given the same --process-id"
                )
            elif exc.errno == errno.EADDRNOTAVAIL:
                msg = (
                    f"cannot listen on {where}: {host} is not an address of this machine. --process-id picks "
                    f"this process's own entry in --addresses (0 for the first)"
                )
            else:
                msg = f"cannot listen on {where}: {exc.strerror}"
            raise ConfigError(msg) from exc
    for index, peer in enumerate(addresses):
        peer_host, _, peer_port = peer.rpartition(":")
        if index == settings.process_id:
            continue
        try:
            socket.getaddrinfo(peer_host.strip("[]"), int(peer_port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            # Not fatal: in Kubernetes a peer's name resolves only once its pod exists.
            _LOG.warning(
                "cannot resolve process %d's address %s yet (%s); Bytewax keeps retrying every second",
                index,
                peer,
                exc.strerror,
            )


def _guard(wiring: Wiring, errors: FirstError) -> Wiring:
    """`wiring` with every source and sink remembering, in `errors`, the first exception it raised.

    In a cluster Bytewax loses a step's exception (adapters/partitions.py): what our
    sources and sinks raised is then still known in the process where it happened.
    """
    guarded_parts: dict[str, Any] = {}
    for field in fields(wiring):
        value = getattr(wiring, field.name)
        if isinstance(value, Source | Sink):
            guarded_parts[field.name] = guarded(value, errors)
    return replace(wiring, **guarded_parts)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what is written to file descriptor 1 to stderr for a while.

    Bytewax's network layer prints its connection retries ("worker 1: error connecting
    to worker 0 ...") on standard output, which is where `run --json` prints its summary.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run(plan: RunPlan) -> None:
    """Run the flow to the end of its input (or until interrupted).

    With `runtime.addresses`, this process is one of a Bytewax cluster: every process runs
    the same command with its own `--process-id`, on the same snapshot directory. Bytewax
    connects them first (each waits for the others), then assigns the input partitions
    (Kafka partitions; the file source is one partition) and the recovery partitions
    among all workers, and routes each site|sku to one worker of one process.
    """
    settings = plan.settings
    cluster = bool(settings.addresses)
    if cluster:
        _check_addresses(settings)
    recovery = None
    if plan.recovery_dir is not None:
        partitions = settings.workers * max(1, len(settings.addresses))
        _init_recovery(plan.recovery_dir, partitions, plan.wiring.shards)
        # State a crashed run saved for an epoch that never completed (its outputs maybe
        # never acknowledged, a shard's pointer to a checkpoint that is rolled back) must
        # not be loaded by a later resume: adapters/recovery.py.
        discard_uncommitted(plan.recovery_dir)
        recovery = RecoveryConfig(str(plan.recovery_dir))  # type: ignore[no-untyped-call]
    if cluster:
        others = [a for i, a in enumerate(settings.addresses) if i != settings.process_id]
        _LOG.info(
            "process %d of %d: listening on %s, waiting for %s to join",
            settings.process_id,
            len(settings.addresses),
            settings.addresses[settings.process_id],
            ", ".join(others) or "nobody",
            extra={"process_id": settings.process_id, "addresses": ";".join(settings.addresses)},
        )
    errors = FirstError()
    # This process runs the flow from here on: start-up's objects out of the collector's
    # reach, collections less often (~19% of the flow's CPU with CPython's defaults).
    tune_collector()
    try:
        with _stdout_to_stderr() if cluster else contextlib.nullcontext():
            cli_main(  # type: ignore[no-untyped-call]
                build_flow(_guard(plan.wiring, errors) if cluster else plan.wiring),
                workers_per_process=settings.workers,
                process_id=settings.process_id if cluster else None,
                addresses=list(settings.addresses) or None,
                epoch_interval=settings.epoch_interval,
                recovery_config=recovery,
            )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # Bytewax wraps what a step raised in its own runtime error; the user needs ours,
        # which says what was wrong and what to do.
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OmniLedgerError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, OmniLedgerError):
            raise cause from exc
        if cluster and type(exc).__name__ == "PanicException" and "thread panic" in str(exc):
            # What every process of a cluster reports when one of them stops (kill -9, a
            # crash, a failed step): the connections break and Bytewax panics.
            local = errors.error
            if isinstance(local, OmniLedgerError):
                raise local from exc
            if local is not None:
                msg = f"the dataflow stopped in this process: {type(local).__name__}: {local}"
                raise OmniLedgerError(msg) from local
            msg = (
                f"the dataflow stopped: the connection to another process of the cluster broke ({exc}). "
                f"Another process died (killed, crashed, out of memory, its machine gone) or failed (its "
                f"own log says why), or the processes were started with different --workers (each needs the "
                f"same). Start every process again on the same snapshot directory; the cluster resumes from "
                f"its last completed epoch"
            )
            raise OmniLedgerError(msg) from exc
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        msg = f"the dataflow stopped: {exc}"
        raise OmniLedgerError(msg) from exc
