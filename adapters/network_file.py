"""Reads a network file (docs/network.md) from disk; `ledger.network_schema` checks what it holds."""

from __future__ import annotations

from pathlib import Path

from ledger.errors import ConfigError
from ledger.network import Network
from ledger.network_schema import parse_network

__all__ = ["load_network"]


def load_network(path: str | Path) -> Network:
    """Read and check a network TOML file; a `ConfigError` names the key path and the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        msg = f"cannot read the network file {path}: {exc.strerror}; check the path"
        raise ConfigError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"{path} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    return parse_network(text, origin=str(path))
