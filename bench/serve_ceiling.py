"""The ceiling of `make bench-serve` on this machine: the load generator against servers that do no work.

`python -m bench.serve_ceiling` starts, one after the other, HTTP servers that answer
every request with the same small JSON body, and drives each with the bench's own load
generator (bench/serve_load.py, `availability` scenario: the same requests, the same
client code) for `--seconds`:

    asgi           a bare ASGI app under uvicorn: the server and the client, nothing else
    fastapi        a FastAPI app with the availability route's signature (path and query
                   parameters validated), a plain `def` returning a dict (FastAPI runs it
                   in its thread pool and encodes the dict itself)
    fastapi-async  the same route as `async def` returning the bytes (no thread pool, no
                   response encoding)

each under uvicorn's pure-Python HTTP parser and asyncio loop (`h11`) and, when they
are installed, its C parser and libuv loop (`httptools`). The client and the servers
share the machine's cores, so the `asgi` row is the most req/s any API can be measured
at here; the others say what the framework costs per request before our own code runs.
Not a test: nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from bench.common import write_result
from bench.serve import free_port, peak_rss_mb, say, stop
from omni_ledger.table import render_table

REPO = Path(__file__).resolve().parents[1]

_SERVER = """
import sys
import uvicorn
kind, port, http, loop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
BODY = b'{"snapshot_id":1,"sku":"SKU-000001","by":null,"sites":[]}'

async def bare(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})

if kind == "asgi":
    app = bare
else:
    from typing import Annotated
    from fastapi import FastAPI, Path, Query
    from fastapi.responses import Response
    app = FastAPI()
    if kind == "fastapi":
        @app.get("/v1/skus/{sku}/availability")
        def availability(
            sku: Annotated[str, Path(min_length=1, max_length=64)],
            lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
            lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
            radius_km: Annotated[float | None, Query(gt=0, le=2000)] = None,
        ) -> dict:
            return {"snapshot_id": 1, "sku": sku, "by": None, "sites": []}
    else:
        @app.get("/v1/skus/{sku}/availability")
        async def availability(
            sku: Annotated[str, Path(min_length=1, max_length=64)],
            lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
            lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
            radius_km: Annotated[float | None, Query(gt=0, le=2000)] = None,
        ) -> Response:
            return Response(BODY, media_type="application/json")
try:
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, loop=loop, log_level="warning")
except KeyboardInterrupt:
    pass
"""


def _stacks() -> list[tuple[str, str]]:
    """(http, loop) pairs uvicorn can run here: the pure-Python pair, and the C pair when installed."""
    stacks = [("h11", "asyncio")]
    if importlib.util.find_spec("httptools") and importlib.util.find_spec("uvloop"):
        stacks.append(("httptools", "uvloop"))
    return stacks


def _wait_up(server: subprocess.Popen[bytes], port: int) -> None:
    import http.client
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the ceiling server exited with {server.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/v1/skus/SKU-000001/availability")
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
        finally:
            conn.close()
    sys.exit("the ceiling server did not answer within 60 s")


def measure(kind: str, http: str, loop: str, client: str, args: argparse.Namespace) -> dict[str, object]:
    """One server kind under the load generator: its summary with the server's kind and stack."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, kind, str(port), http, loop], cwd=REPO)
    try:
        _wait_up(server, port)
        say(f"{kind} ({http}, {loop}), {client} client: {args.warmup:g} s warm-up, {args.seconds:g} s measured...")
        out = subprocess.run(
            [
                sys.executable, "-m", "bench.serve_load", "--port", str(port), "--scenario", "availability",
                "--skus", "1000", "--seconds", str(args.seconds), "--warmup", str(args.warmup),
                "--clients", str(args.clients), "--server-pid", str(server.pid), "--client", client,
            ],
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        rss = peak_rss_mb(server.pid)
    finally:
        stop(server)
    assert isinstance(summary, dict)
    found: dict[str, object] = {"server": kind, "http": http, "loop": loop, "peak_rss_mb": rss}
    return found | summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--servers", default="asgi,fastapi,fastapi-async")
    parser.add_argument(
        "--clients-kinds", default="select,threads", help="load generator kinds (bench.serve_load --client)"
    )
    args = parser.parse_args()
    rows = [
        measure(kind, http, loop, client, args)
        for client in (c.strip() for c in args.clients_kinds.split(",") if c.strip())
        for kind in (s.strip() for s in args.servers.split(",") if s.strip())
        for http, loop in _stacks()
    ]
    path = write_result("serve-ceiling", {"params": vars(args), "runs": rows})
    columns = (
        "client",
        "server",
        "http",
        "loop",
        "req/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/req",
        "client CPU ms/req",
    )
    table = [
        [
            r["client"], r["server"], r["http"], r["loop"], r["requests_per_s"], r["p50_ms"], r["p99_ms"],
            r.get("server_cpu_ms_per_request"), r.get("client_cpu_ms_per_request"),
        ]
        for r in rows
    ]  # fmt: skip
    print(render_table(columns, table))
    print(f"results in {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
