"""The command line's edges: a closed pipe, an unknown sku, a wrong directory, the help text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("edges") / "snapshots"
    done = run_cli(
        "run", "--source", "sim", "--limit", "3000", "--rate", "100000", "--quiet", "--snapshot-dir", str(directory)
    )
    assert done.returncode == 0, done.stderr
    return directory


def test_output_piped_into_head_ends_quietly(store: Path) -> None:
    # Far more than a pipe holds: the writer meets the closed pipe while head has long exited.
    query = "SELECT range AS n FROM range(200000)"
    command = f"{sys.executable} -m omni_ledger sql --snapshot-dir {store} -c '{query}' | head -n 3"
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], cwd=REPO, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr


def test_an_unknown_sku_fails_and_says_how_to_list_the_skus(store: Path) -> None:
    done = run_cli("atp", "--sku", "NO-SUCH-SKU", "--snapshot-dir", str(store))

    assert done.returncode == 1
    assert "no position of sku 'NO-SUCH-SKU'" in done.stderr
    assert "SELECT DISTINCT sku FROM positions" in done.stderr
    assert run_cli("atp", "--sku", "SKU-00001", "--snapshot-dir", str(store)).returncode == 0


def test_serve_refuses_a_snapshot_directory_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "not-there" / "snapshots"  # a parent that exists would be waited for a few seconds
    done = run_cli("serve", "--snapshot-dir", str(missing), "--port", "0", "--metrics-port", "0")

    assert done.returncode == 2
    assert f"--snapshot-dir {missing}: no such directory" in done.stderr
    assert not missing.exists()


def test_atp_help_says_what_a_sku_looks_like() -> None:
    done = run_cli("atp", "--help")

    assert done.returncode == 0
    assert "e.g. SKU-00042" in done.stdout
