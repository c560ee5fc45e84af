"""The load generator of `make bench-serve`, run in its own process by bench/serve.py.

`python -m bench.serve_load --port P --scenario S --skus N --seconds T --clients C`
runs C client threads, each on its own keep-alive `http.client` connection, sending
the scenario's request in a closed loop (the next one when the answer has arrived):
first `--warmup` seconds unmeasured, then T seconds measured. Prints one JSON object:
requests, errors by status, latency percentiles (ms), the server's CPU seconds over
the measured part when `--server-pid` is given (Linux /proc), and when each snapshot id
was first named by an answer (wall clock ms), from which bench/serve.py computes how
long a publish took to become visible.

Scenarios:
    availability     GET /v1/skus/{sku}/availability?lat&lon&radius_km
    promise          POST /v1/promise, one sku, no appointment
    promise_appt     POST /v1/promise, one sku, with an appointment
    promise_basket3  POST /v1/promise, three skus, no appointment
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from bench.serve_network import customer_point, sku_name

__all__ = ["SCENARIOS", "main"]

SCENARIOS = ("availability", "promise", "promise_appt", "promise_basket3")
_TIMEOUT_S = 120.0


@dataclass
class _Tally:
    """What one client saw; merged after the run."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    response_bytes: int = 0
    samples: list[bytes] = field(default_factory=list)
    first_seen: dict[int, int] = field(default_factory=dict)
    """snapshot id -> wall clock ms of the first answer naming it."""


_SNAPSHOT = re.compile(rb'"snapshot_id":\s*(\d+)')


def _request(scenario: str, rng: random.Random, skus: int, radius_km: float) -> tuple[str, str, bytes | None]:
    """(method, path, body) of one random request."""
    lat, lon = customer_point(rng)
    if scenario == "availability":
        query = urlencode({"lat": lat, "lon": lon, "radius_km": radius_km})
        return "GET", f"/v1/skus/{sku_name(rng.randrange(skus))}/availability?{query}", None
    count = 3 if scenario == "promise_basket3" else 1
    items = [{"sku": sku_name(i), "qty": 1} for i in rng.sample(range(skus), count)]
    body = {"items": items, "lat": lat, "lon": lon, "radius_km": radius_km, "appointment": scenario == "promise_appt"}
    return "POST", "/v1/promise", json.dumps(body).encode()


def _client(
    port: int, scenario: str, seed: int, skus: int, radius_km: float, start: float, measure_from: float, until: float,
    tally: _Tally,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_TIMEOUT_S)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    while time.perf_counter() < start:
        time.sleep(0.001)
    while (now := time.perf_counter()) < until:
        method, path, body = _request(scenario, rng, skus, radius_km)
        sent = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            status = str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            # A dropped keep-alive connection: counted, and the next request opens a new one.
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_TIMEOUT_S)
            payload, status = b"", type(exc).__name__
        elapsed = time.perf_counter() - sent
        # Both answers start with the snapshot id: a look at the head, not a JSON parse per answer.
        named = _SNAPSHOT.search(payload, 0, 64)
        if named is not None:
            tally.first_seen.setdefault(int(named.group(1)), time.time_ns() // 1_000_000)
        if now < measure_from:
            if len(tally.samples) < 20 and status == "200":
                tally.samples.append(payload)  # warm-up answers, to describe what was served
            continue
        tally.latencies.append(elapsed)
        tally.statuses[status] += 1
        tally.response_bytes += len(payload)
    conn.close()


def _first_seen(tallies: list[_Tally]) -> dict[int, int]:
    seen: dict[int, int] = {}
    for tally in tallies:
        for sid, at in tally.first_seen.items():
            seen[sid] = min(at, seen.get(sid, at))
    return seen


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _describe(scenario: str, samples: list[bytes]) -> dict[str, float]:
    """Averages over the warm-up answers: how big the answers were in sites, options, exclusions."""
    bodies = [json.loads(s) for s in samples]
    if not bodies:
        return {}
    if scenario == "availability":
        return {"sites_in_radius": sum(len(b["sites"]) for b in bodies) / len(bodies)}
    return {
        "options": sum(len(b["options"]) for b in bodies) / len(bodies),
        "together": sum(len(b["together"]) for b in bodies) / len(bodies),
        "options_total": sum(b["options_total"] for b in bodies) / len(bodies),
        "together_total": sum(b["together_total"] for b in bodies) / len(bodies),
        "excluded": sum(x["count"] for b in bodies for x in b["exclusions"]) / len(bodies),
        "answer_bytes": sum(len(s) for s in samples) / len(samples),
    }


def run(
    port: int, scenario: str, *, skus: int, seconds: float, warmup: float, clients: int, radius_km: float, seed: int,
    server_pid: int | None = None,
) -> dict[str, object]:  # fmt: skip
    """Run one scenario and summarise it."""
    start = time.perf_counter() + 0.05
    measure_from = start + warmup
    until = measure_from + seconds
    tallies = [_Tally() for _ in range(clients)]
    threads = [
        threading.Thread(
            target=_client,
            args=(port, scenario, seed * 1000 + n, skus, radius_km, start, measure_from, until, tallies[n]),
            name=f"client-{n}",
            daemon=True,
        )
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    cpu_before = _cpu_seconds(server_pid)
    time.sleep(max(0.0, until - time.perf_counter()))
    cpu_after = _cpu_seconds(server_pid)  # read at the deadline: answers still in flight are not counted
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - measure_from
    latencies = sorted(x for t in tallies for x in t.latencies)
    statuses: Counter[str] = Counter()
    for t in tallies:
        statuses.update(t.statuses)
    count = len(latencies)
    ok = sum(n for status, n in statuses.items() if status.startswith("2"))
    ms = [x * 1000 for x in latencies]
    summary: dict[str, object] = {
        "scenario": scenario,
        "clients": clients,
        "seconds": round(wall, 3),
        "requests": count,
        "requests_per_s": count / wall if wall > 0 else 0.0,
        "errors": count - ok,
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": _percentile(ms, 0.50) if ms else None,
        "p90_ms": _percentile(ms, 0.90) if ms else None,
        "p99_ms": _percentile(ms, 0.99) if ms else None,
        "max_ms": ms[-1] if ms else None,
        "mean_ms": sum(ms) / count if ms else None,
        "mean_response_bytes": sum(t.response_bytes for t in tallies) / count if count else None,
        "answers": _describe(scenario, [s for t in tallies for s in t.samples]),
        "first_seen_ms": {str(sid): at for sid, at in sorted(_first_seen(tallies).items())},
        "measured_from_ms": time.time_ns() // 1_000_000 - round(wall * 1000),
    }
    if cpu_before is not None and cpu_after is not None and count:
        summary["server_cpu_s"] = cpu_after - cpu_before
        summary["server_cpu_ms_per_request"] = (cpu_after - cpu_before) * 1000 / count
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--skus", type=int, required=True, help="product skus in the store (SKU-000000...)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--radius-km", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-pid", type=int, default=None)
    args = parser.parse_args()
    summary = run(
        args.port,
        args.scenario,
        skus=args.skus,
        seconds=args.seconds,
        warmup=args.warmup,
        clients=args.clients,
        radius_km=args.radius_km,
        seed=args.seed,
        server_pid=args.server_pid,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
