"""The web console: the sales associate's explorer, the clerk's task list, the planner's shuttle board.

A static page and a small script (no build step, no framework, nothing fetched from
the internet at run time) over the same JSON API the e-commerce front uses, served by
`omni-ledger serve` under `/console/`. Every action is an API call, so the console has
exactly the API's rules: reads open or with a token, writes with a write token.
Why not a front-end framework: three views of tables and buttons do not need one, and
plain files keep the console auditable and servable from the wheel.
"""

from __future__ import annotations

import io
from pathlib import Path

import barcode
from barcode.errors import BarcodeError
from barcode.writer import SVGWriter
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC", "code128_svg", "mount_console"]

STATIC = Path(__file__).resolve().parent / "static"


def mount_console(app: FastAPI) -> None:
    """Serve the console's files at /console/ (and send / there)."""
    app.mount("/console", StaticFiles(directory=STATIC, html=True), name="console")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/console/")


def code128_svg(text: str) -> bytes:
    """A Code 128 barcode of `text` as SVG; `ValueError` if it cannot be encoded.

    python-barcode: a well-kept encoder beats our own tables.
    """
    out = io.BytesIO()
    try:
        code = barcode.get("code128", text, writer=SVGWriter())
    except BarcodeError as exc:
        # Code 128 carries ASCII only; our parcel ids are ASCII, a typed-in one may not be.
        raise ValueError(str(exc)) from exc
    code.write(out, options={"module_height": 18.0, "font_size": 0, "text_distance": 1.0, "quiet_zone": 4.0})
    return out.getvalue()
