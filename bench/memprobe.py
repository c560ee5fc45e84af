"""`python -m bench.memprobe OUT TRIGGER -- RUN-ARGS`: `omni-ledger RUN-ARGS` with tracemalloc on.

The real CLI (`omni_ledger.cli.main`) runs in this process with `tracemalloc` tracing
from the start (1 frame a trace). When the file TRIGGER appears, a thread writes to OUT
(JSON) what the Python heap holds:

- `traced_bytes`: tracemalloc's current total;
- `by_line`: the 25 source lines that allocated the most live bytes;
- `by_type`: live objects by type (count, shallow bytes by `sys.getsizeof`): every object
  the garbage collector tracks plus the untracked ones they refer to (strings, ints...);

then creates OUT + ".done". bench/memory.py runs it on a sample and on a baseline and
subtracts one from the other. Not for timing: tracing slows the flow several times.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

_TOP_LINES = 25
_EXAMPLES = 4


def _types() -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """{type: [count, bytes]} of live objects, and a few examples of the most numerous types."""
    tracked = gc.get_objects()  # first: the census's own containers are not in it
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    examples: dict[str, list[Any]] = {}
    seen = {id(obj) for obj in tracked}
    todo: list[Any] = []
    for obj in tracked:
        name = type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj, 0)
        if counts[name] % 9973 == 0 and len(examples.setdefault(name, [])) < _EXAMPLES:
            examples[name].append(obj)
        todo.extend(ref for ref in gc.get_referents(obj) if not gc.is_tracked(ref))
    while todo:  # untracked objects (atomic tuples, str, int...) and what they hold
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, tuple):
            todo.extend(obj)
        name = type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj, 0)
        if counts[name] % 9973 == 0 and len(examples.setdefault(name, [])) < _EXAMPLES:
            examples[name].append(obj)
    common = [name for name, _ in sizes.most_common(8)]
    shown = {name: [_short(obj) for obj in examples.get(name, [])] for name in common}
    return {name: [counts[name], sizes[name]] for name in counts}, shown


def _short(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # a repr that fails says so
        text = f"<repr failed: {exc!r}>"
    return text if len(text) <= 160 else text[:157] + "..."


def _traced() -> dict[str, Any]:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"))
    )
    current, peak = tracemalloc.get_traced_memory()
    lines = [
        {"where": f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}", "bytes": stat.size, "count": stat.count}
        for stat in snapshot.statistics("lineno")[:_TOP_LINES]
    ]
    return {"traced_bytes": current, "traced_peak_bytes": peak, "by_line": lines}


def _breakdown() -> dict[str, Any]:
    started = time.monotonic()
    traced = _traced()  # its snapshot (a tuple per allocation) is gone before the census
    # Tracing is done: stop it, or the census allocates under it (slow, and counted).
    tracemalloc.stop()
    types, examples = _types()
    return {**traced, "by_type": types, "examples": examples, "seconds": time.monotonic() - started}


def _watch(out: Path, trigger: Path) -> None:
    while not trigger.exists():
        time.sleep(0.2)
    out.write_text(json.dumps(_breakdown()))
    Path(f"{out}.done").touch()


def main() -> None:
    out, trigger = Path(sys.argv[1]), Path(sys.argv[2])
    args = sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:]
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    threading.Thread(target=_watch, args=(out, trigger), daemon=True, name="memprobe").start()
    from omni_ledger.cli import main as cli_main

    sys.exit(cli_main(args))


if __name__ == "__main__":
    main()
