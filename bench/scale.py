"""Scale-out: the same Kafka input by one process and by a Bytewax cluster of several.

Both run `omni-ledger run --source kafka --until-end` over the same topic (several
partitions); the cluster's processes get `--process-id I --addresses "127.0.0.1:P0;..."`
and share one snapshot directory (store and recovery state). Each rate is the input's
events over the wall time net of start-up, where start-up is the wall time of the same
arrangement on an empty topic. The final positions of both stores are compared
(count and sums of on_hand, reserved, atp).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import say
from bench.kafka import FlowRun, InputTopic, run_flow, startup_s

__all__ = ["measure_scale", "positions_digest"]

_DIGEST = "SELECT count(*), sum(on_hand), sum(reserved), sum(atp) FROM positions"


def positions_digest(store: str) -> list[Any] | None:
    """(positions, Σ on_hand, Σ reserved, Σ atp) of a store's latest snapshot, None when unreadable."""
    from adapters.snapshot_store import SnapshotReader

    try:
        with SnapshotReader.open(Path(store)) as reader:
            _, rows = reader.sql(_DIGEST)
    except Exception:  # a benchmark reports what it cannot read
        return None
    return [int(v or 0) for v in rows[0]] if rows else None


def measure_scale(
    bootstrap: str,
    inp: InputTopic,
    work: Path,
    *,
    processes: int = 2,
    one: tuple[FlowRun, float] | None = None,
    timeout: float = 600.0,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Rates of 1 process and of a `processes`-process cluster on `inp`, and whether they agree.

    `one` is a 1-process run of the same input and its start-up time, when the caller has one.
    """
    if one is None:
        say("  start-up of 1 process (empty topic)...")
        start1 = startup_s(bootstrap, work / "empty-1")
        say("  1 process...")
        run1 = run_flow(bootstrap, inp, work / "one", timeout=timeout, extra=extra)
    else:
        run1, start1 = one
    say(f"  start-up of a {processes}-process cluster (empty topic)...")
    try:
        start_n = startup_s(bootstrap, work / f"empty-{processes}", processes=processes)
    except RuntimeError as exc:
        return {"error": str(exc), "one": run1.as_dict(start1)}
    say(f"  {processes}-process cluster...")
    run_n = run_flow(bootstrap, inp, work / "cluster", processes=processes, timeout=timeout, extra=extra)
    result: dict[str, Any] = {
        "processes": processes,
        "one": run1.as_dict(start1),
        "cluster": run_n.as_dict(start_n),
    }
    if run1.error or run_n.error:
        result["error"] = run_n.error or run1.error
        return result
    rate1, rate_n = run1.net_rate(start1), run_n.net_rate(start_n)
    assert rate1 is not None
    assert rate_n is not None
    digest1, digest_n = positions_digest(run1.store), positions_digest(run_n.store)
    result.update(
        one_per_s=rate1,
        cluster_per_s=rate_n,
        speedup=rate_n / rate1,
        span_speedup=(run_n.span_rate() or 0) / (run1.span_rate() or 1),
        digest_one=digest1,
        digest_cluster=digest_n,
        same_positions=digest1 is not None and digest1 == digest_n,
    )
    return result
