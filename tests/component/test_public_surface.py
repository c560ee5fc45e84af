"""Each package exports what its users import, and every exported name exists."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import adapters
import flows
import ledger
import omni_ledger
import simulator

pytestmark = pytest.mark.component


PACKAGES = (ledger, simulator, flows, adapters, omni_ledger)


def modules():
    for package in PACKAGES:
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if not info.name.endswith(".__main__"):
                yield info.name


def _imports_of(package, forbidden):
    """(module file, forbidden name) for every import of `forbidden` in `package`'s source files."""
    root = Path(package.__path__[0])
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        for name in forbidden:
            if f"import {name}" in text or f"from {name}" in text:
                yield path.relative_to(root.parent).as_posix(), name


@pytest.mark.parametrize("name", list(modules()))
def test_every_name_in_all_exists(name):
    module = importlib.import_module(name)
    for exported in getattr(module, "__all__", ()):
        assert hasattr(module, exported), f"{name}.__all__ names {exported!r}, which it does not define"


def test_the_ledger_package_exports_the_fold_and_its_types():
    assert {
        "fold",
        "expire",
        "next_expiry",
        "validate",
        "split",
        "Position",
        "PositionChange",
        "DeadLetter",
        "OmniLedgerError",
        "LedgerPolicy",
    } <= set(ledger.__all__)


def test_the_simulator_is_as_pure_as_the_domain():
    forbidden = ("bytewax", "confluent_kafka", "duckdb", "fastavro", "adapters", "flows", "omni_ledger")
    assert list(_imports_of(simulator, forbidden)) == []


def test_the_adapters_and_the_domain_import_nothing_of_the_application():
    assert list(_imports_of(adapters, ("omni_ledger",))) == []
    assert list(_imports_of(ledger, ("omni_ledger",))) == []


def test_the_domain_imports_no_runtime_or_io_library():
    forbidden = ("bytewax", "confluent_kafka", "duckdb", "fastavro", "adapters", "flows", "omni_ledger")
    for info in pkgutil.iter_modules(ledger.__path__):
        text = Path(ledger.__path__[0], f"{info.name}.py").read_text()
        for name in forbidden:
            assert f"import {name}" not in text, (info.name, name)
            assert f"from {name}" not in text, (info.name, name)
