"""A real Prometheus and promtool for the tests: find them, start one on loopback, query it.

`infra/prometheus/install.sh` (a prerequisite of `make test`) installs Debian's
`prometheus` package when it is missing. Without the binaries the tests that need them
skip on a developer's machine, saying how to install them, and fail under `CI=true`,
where they must run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "infra" / "prometheus"
READY_TIMEOUT_S = 30


def tools_missing(reason: str) -> NoReturn:
    """Skip, loudly, on a developer's machine; fail under CI=true."""
    message = f"NO PROMETHEUS: {reason}"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message}\n(CI=true: these tests must run in CI, so they fail, not skip)", pytrace=False)
    pytest.skip(f"{message}\nRun `make prometheus-tools` (as root: apt-get install prometheus), or put it on PATH.")


def tool(name: str) -> str:
    """The path of `prometheus` or `promtool`, or skip/fail."""
    found = shutil.which(name)
    if found is None:
        tools_missing(f"`{name}` is not on PATH")
    return found


def free_port() -> int:
    """A TCP port free on loopback right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `url`: (status, body); a refused connection is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


@dataclass(frozen=True)
class Prometheus:
    """A Prometheus the test started, at `url`."""

    url: str

    def api(self, path: str, **params: str) -> Any:
        """`data` of a Prometheus HTTP API answer; raises on an error status."""
        query = urllib.parse.urlencode(params)
        status, body = get(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""), timeout=15)
        answer = json.loads(body) if body else {}
        if status != 200 or answer.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: HTTP {status}: {body[:500]!r}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of `expr` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def firing(self) -> dict[str, list[dict[str, Any]]]:
        """Alert name -> its firing alerts."""
        out: dict[str, list[dict[str, Any]]] = {}
        for alert in self.api("alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert)
        return out


@contextlib.contextmanager
def running_prometheus(config: Path, data: Path, port: int) -> Iterator[Prometheus]:
    """Run `prometheus` with `config` on 127.0.0.1:`port` until the block ends."""
    binary = tool("prometheus")
    log = (data.parent / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while get(f"{url}/-/ready", timeout=1)[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                text = (data.parent / "prometheus.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"Prometheus did not become ready on {url}:\n{text}")
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`promtool ARGS` (stdin optional), output captured."""
    return subprocess.run(
        [tool("promtool"), *args], input=stdin, capture_output=True, timeout=120, check=False, cwd=REPO
    )
