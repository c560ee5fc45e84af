"""What every command shares: its settings (file, environment, flags) and how it prints rows."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from omni_ledger import logs
from omni_ledger.config import Settings, load_settings
from omni_ledger.table import render_table

__all__ = ["emit", "json_default", "settings_of"]


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings file's, then the environment's, then the flags' settings; logging configured by them."""
    settings = load_settings(args.config).with_overrides(
        snapshot_dir=getattr(args, "snapshot_dir", None),
        metrics_port=getattr(args, "metrics_port", None),
        metrics_host=getattr(args, "metrics_host", None),
        log_format=getattr(args, "log_format", None),
        log_level=getattr(args, "log_level", None),
    )
    logs.configure(settings.logging.format, settings.logging.level)
    return settings


def json_default(value: object) -> str:
    """A value JSON cannot spell itself: a datetime in ISO 8601 (UTC as Z), anything else as text."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: Sequence[str], title: str = "") -> None:
    """`rows` as JSON with --json, else as a table of `columns` under `title`."""
    if args.json:
        print(json.dumps(rows, default=json_default, indent=None))
        return
    if title:
        print(title)
    if not rows:
        print("(no rows)")
        return
    print(render_table(columns, [[row.get(c) for c in columns] for row in rows]))
