"""The load generator of `make bench-serve`, run in its own process by bench/serve.py.

`python -m bench.serve_load --port P --scenario S --skus N --seconds T --clients C`
keeps C keep-alive connections, each sending the scenario's request in a closed loop
(the next one when the answer has arrived): first `--warmup` seconds unmeasured, then
T seconds measured. By default every connection is driven from one thread on one
selector, with the random requests encoded before the clock starts (`--client
threads`: one `http.client` connection per thread, as before; it costs the shared
cores ~4x the CPU a request). Prints one JSON object: requests, errors by status,
latency percentiles (ms), the server's CPU seconds over the measured part when
`--server-pid` is given (Linux /proc) and the load generator's own, and when each
snapshot id was first named by an answer (wall clock ms), from which bench/serve.py
computes how long a publish took to become visible.

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
import selectors
import socket
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
    """One `http.client` connection in a closed loop, in a thread of its own (`--client threads`)."""
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
        _answered(tally, payload, status, time.perf_counter() - sent, measured=now >= measure_from)
    conn.close()


def _answered(tally: _Tally, payload: bytes, status: str, elapsed: float, *, measured: bool) -> None:
    # Both answers start with the snapshot id: a look at the head, not a JSON parse per answer.
    named = _SNAPSHOT.search(payload, 0, 64)
    if named is not None:
        tally.first_seen.setdefault(int(named.group(1)), time.time_ns() // 1_000_000)
    if not measured:
        if len(tally.samples) < 20 and status == "200":
            tally.samples.append(payload)  # warm-up answers, to describe what was served
        return
    tally.latencies.append(elapsed)
    tally.statuses[status] += 1
    tally.response_bytes += len(payload)


def _wire(method: str, path: str, body: bytes | None, port: int) -> bytes:
    """One request as the bytes sent on the wire (HTTP/1.1, keep-alive)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


@dataclass
class _Connection:
    """One keep-alive connection of the selector client and the request it waits on."""

    sock: socket.socket
    requests: list[bytes]
    tally: _Tally
    next: int = 0
    sent_at: float = 0.0
    measured: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    body_at: int = -1
    ends_at: int = -1


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _select_clients(
    port: int, requests: list[list[bytes]], start: float, measure_from: float, until: float, tallies: list[_Tally]
) -> None:
    """Every connection in one thread, on one selector (`--client select`, the default).

    The requests are encoded before the run and a response is parsed only as far as its
    status line and Content-Length: the `http.client` threads spent ~0.55 ms of CPU a
    request (header parsing, the GIL passed between four threads), which on this 2-core
    machine is CPU the server under test does not get.
    """
    selector = selectors.DefaultSelector()
    connections = [_Connection(_connect(port), reqs, tally) for reqs, tally in zip(requests, tallies, strict=True)]
    while time.perf_counter() < start:
        time.sleep(0.001)

    def send(conn: _Connection) -> None:
        conn.sent_at = time.perf_counter()
        conn.measured = conn.sent_at >= measure_from
        conn.sock.sendall(conn.requests[conn.next % len(conn.requests)])  # small: fits the socket buffer
        conn.next += 1

    for conn in connections:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
        send(conn)
    waiting = len(connections)
    deadline = until + _TIMEOUT_S
    while waiting and time.perf_counter() < deadline:
        for key, _ in selector.select(timeout=1.0):
            conn = key.data
            try:
                data = conn.sock.recv(1 << 18)
            except OSError:
                data = b""
            if not data:  # the server closed the connection: counted, and a new one replaces it
                _answered(conn.tally, b"", "closed", time.perf_counter() - conn.sent_at, measured=conn.measured)
                selector.unregister(conn.sock)
                conn.sock.close()
                conn.sock, conn.buffer, conn.body_at = _connect(port), bytearray(), -1
                selector.register(conn.sock, selectors.EVENT_READ, conn)
            else:
                conn.buffer += data
                if conn.body_at < 0:
                    end = conn.buffer.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    head = bytes(conn.buffer[:end]).lower()
                    at = head.find(b"\r\ncontent-length:")
                    if at < 0:
                        msg = f"an answer without Content-Length: {head[:200]!r}"
                        raise SystemExit(msg)
                    stop = head.find(b"\r\n", at + 2)
                    conn.body_at = end + 4
                    conn.ends_at = conn.body_at + int(head[at + 17 : None if stop < 0 else stop])
                if len(conn.buffer) < conn.ends_at:
                    continue
                elapsed = time.perf_counter() - conn.sent_at
                payload = bytes(conn.buffer[conn.body_at : conn.ends_at])
                status = conn.buffer[9:12].decode()
                del conn.buffer[: conn.ends_at]
                conn.body_at = -1
                _answered(conn.tally, payload, status, elapsed, measured=conn.measured)
            if time.perf_counter() < until:
                send(conn)
            else:
                waiting -= 1
                selector.unregister(conn.sock)
    for conn in connections:
        conn.sock.close()


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
    server_pid: int | None = None, client: str = "select", distinct: int = 4096,
) -> dict[str, object]:  # fmt: skip
    """Run one scenario and summarise it."""
    tallies = [_Tally() for _ in range(clients)]
    if client == "select":
        # Encoded before the clock starts: `distinct` random requests per connection, sent in turn.
        requests = []
        for n in range(clients):
            rng = random.Random(seed * 1000 + n)
            requests.append([_wire(*_request(scenario, rng, skus, radius_km), port) for _ in range(distinct)])
    start = time.perf_counter() + 0.05
    measure_from = start + warmup
    until = measure_from + seconds
    failed: list[BaseException] = []

    def select_clients() -> None:
        try:
            _select_clients(port, requests, start, measure_from, until, tallies)
        except BaseException as exc:  # reported by the main thread: a dead client must not read as a slow server
            failed.append(exc)

    if client == "select":
        threads = [
            threading.Thread(
                target=select_clients,
                name="clients",
                daemon=True,
            )
        ]
    else:
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
    own_before = time.process_time()
    time.sleep(max(0.0, until - time.perf_counter()))
    cpu_after = _cpu_seconds(server_pid)  # read at the deadline: answers still in flight are not counted
    own_after = time.process_time()
    for thread in threads:
        thread.join()
    if failed:
        raise SystemExit(failed[0])
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
        "client": client,
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
    if count:
        # The load generator shares the cores with the server: what it spends is not the server's.
        summary["client_cpu_ms_per_request"] = (own_after - own_before) * 1000 / count
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
    parser.add_argument(
        "--client", choices=("select", "threads"), default="select",
        help="select: every connection on one selector, requests encoded beforehand; threads: http.client per thread",
    )  # fmt: skip
    parser.add_argument("--distinct", type=int, default=4096, help="random requests encoded per connection (select)")
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
        client=args.client,
        distinct=args.distinct,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
