"""A py-spy profile of the flow over the throughput input: flame graph, speedscope file, top frames.

`py-spy record --format raw --nolineno` samples the flow process (all threads, Bytewax's
worker threads included; idle threads left out) at `rate` Hz while it runs to the end of
the topic. From its collapsed stacks this module writes, beside the suite's JSON:

- `*-flame.svg`: a flame graph (width = samples; hover for the count and share);
- `*-speedscope.json`: the same samples for https://www.speedscope.app;
- `*-collapsed.txt`: py-spy's raw output;

and returns the frames with the most self time (samples where the frame is the leaf).
py-spy attaches with ptrace: it needs root or kernel.yama.ptrace_scope = 0.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from bench.kafka import InputTopic, run_flow

__all__ = ["flame_svg", "groups", "main", "profile_flow", "py_spy", "top_frames"]


def py_spy() -> str | None:
    """The py-spy executable beside this Python (the venv's), or on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def ptrace_works(spy: str) -> str | None:
    """None when py-spy can sample a child process here, else why not."""
    probe = subprocess.run(
        [spy, "record", "--format", "raw", "--duration", "1", "--output", "/dev/null", "--",
         sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        text = (probe.stderr or probe.stdout).strip()
        return text[-400:] or f"py-spy exited {probe.returncode}"
    return None


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw format: `frame;frame;...;leaf COUNT` a line."""
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def top_frames(stacks: list[tuple[list[str], int]], limit: int = 15) -> list[dict[str, Any]]:
    """Frames by self samples (leaf), with their total (anywhere in the stack) share."""
    total = sum(count for _, count in stacks) or 1
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    return [
        {"frame": frame, "self_samples": n, "self_share": n / total, "total_share": anywhere[frame] / total}
        for frame, n in own.most_common(limit)
    ]


_GROUPS = (
    # (group, a frame that puts a sample in it), first match wins: what the flow spends its time on.
    ("snapshot writer thread", "_run (adapters/snapshot_store/sink.py)"),
    ("decode + validate", "read_event (adapters/avro_wire.py)"),
    ("decode (fastavro)", "WireCodec.decode (adapters/avro_wire.py)"),
    ("validate", "validate (ledger/contract.py)"),
    ("admission: split, grouping", "admit_batch (flows/logic.py)"),
    ("fold: metrics", "FlowMetrics.folded"),
    ("fold", "ShardLogic.on_batch (flows/logic.py)"),
    ("shard checkpoints", "ShardLogic.snapshot (flows/logic.py)"),
    ("outputs: encode + produce", "_SinkPartition.write_batch (adapters/kafka_io.py)"),
    ("snapshot sink, worker side", "_Partition."),
    ("Kafka source", "_SourcePartition.next_batch (adapters/kafka_io.py)"),
    ("atp notices", "_notices (flows/atp.py)"),
    ("atp notices", "_decisions (flows/atp.py)"),
    # An import's frames, wherever it happens: `<module>` alone also roots the main thread's
    # every sample (the `omni-ledger` script), which put a tenth of the run's samples here.
    ("start-up: imports", "_find_and_load"),
    # What is left of the worker's samples under the runner: Bytewax's own code holding the
    # GIL (the `run` frame is the leaf) and its operator shims between the steps above.
    ("Bytewax runtime, operator shims", "run (omni_ledger/runner.py)"),
)


def groups(stacks: list[tuple[list[str], int]]) -> dict[str, float]:
    """Share of the samples per part of the flow (`_GROUPS`), the rest as "other"."""
    total = sum(count for _, count in stacks) or 1
    shares: Counter[str] = Counter()
    for frames, count in stacks:
        joined = ";".join(frames)
        shares[next((name for name, frame in _GROUPS if frame in joined), "other")] += count
    return {name: n / total for name, n in shares.most_common()}


def speedscope(stacks: list[tuple[list[str], int]], name: str) -> dict[str, Any]:
    index: dict[str, int] = {}
    samples = [[index.setdefault(frame, len(index)) for frame in frames] for frames, _ in stacks]
    weights = [count for _, count in stacks]
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": frame} for frame in index]},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "exporter": "omni-ledger bench/profile.py",
    }


def flame_svg(stacks: list[tuple[list[str], int]], title: str, width: int = 1400) -> str:
    """A static flame graph (root at the bottom); each box's tooltip gives its samples and share."""
    tree: dict[str, Any] = {"n": 0, "kids": {}}
    for frames, count in stacks:
        node = tree
        node["n"] += count
        for frame in frames:
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += count
    total = tree["n"] or 1

    def depth(node: dict[str, Any]) -> int:
        return 1 + max((depth(kid) for kid in node["kids"].values()), default=0)

    row, top = 17, 40
    levels = depth(tree)
    height = top + levels * row + 10
    scale = (width - 20) / total
    boxes: list[str] = []

    def draw(node: dict[str, Any], name: str, x: float, level: int) -> None:
        w = node["n"] * scale
        if w < 0.3:
            return
        y = height - 10 - (level + 1) * row
        hue = zlib.crc32(name.encode()) % 60
        label = html.escape(name)
        tip = f"{label} ({node['n']:,} samples, {node['n'] / total:.1%})"
        boxes.append(
            f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
            f'fill="hsl({hue},80%,60%)" rx="2"/>'
        )
        chars = int(w / 7)
        if chars >= 3:
            text = name if len(name) <= chars else name[: chars - 2] + ".."
            boxes.append(f'<text x="{x + 3:.1f}" y="{y + row - 5}">{html.escape(text)}</text>')
        boxes.append("</g>")
        for kid_name in sorted(node["kids"]):
            kid = node["kids"][kid_name]
            draw(kid, kid_name, x, level + 1)
            x += kid["n"] * scale

    draw(tree, "all", 10.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<rect width="100%" height="100%" fill="#fdfdf6"/>'
        f'<text x="10" y="20" font-size="14">{html.escape(title)}</text>'
        f'<text x="10" y="34" fill="#555">{total:,} samples; width = share of samples; hover a box</text>'
        + "".join(boxes)
        + "</svg>"
    )


def profile_flow(
    bootstrap: str,
    inp: InputTopic,
    work: Path,
    out_prefix: Path,
    *,
    rate: int = 100,
    timeout: float = 600.0,
    gil: bool = False,
) -> dict[str, Any]:
    """The flow over `inp` under py-spy; files at `out_prefix`-*; top frames and where the files are.

    `gil`: only the samples of the thread holding the GIL (py-spy `--gil`), which tells
    native work that runs beside the fold (DuckDB's MERGE, librdkafka) from Python work
    that takes turns with it.
    """
    spy = py_spy()
    if spy is None:
        return {"error": "py-spy is not installed (pip install py-spy; it is in the dev extras)"}
    why = ptrace_works(spy)
    if why is not None:
        return {"error": f"py-spy cannot attach here (ptrace): {why}"}
    collapsed = out_prefix.with_name(out_prefix.name + "-collapsed.txt")
    collapsed.parent.mkdir(parents=True, exist_ok=True)
    wrapper = [spy, "record", "--format", "raw", "--nolineno", "--rate", str(rate), *(["--gil"] if gil else [])]
    wrapper += ["--output", str(collapsed), "--"]
    run = run_flow(bootstrap, inp, work, wrapper=wrapper, timeout=timeout)
    if run.error is not None:
        return {"error": run.error}
    if not collapsed.exists():
        return {"error": "py-spy wrote no profile"}
    stacks = read_collapsed(collapsed)
    title = f"omni-ledger run --source kafka --until-end: {inp.events:,} events, {inp.partitions} partitions (py-spy)"
    svg = out_prefix.with_name(out_prefix.name + "-flame.svg")
    svg.write_text(flame_svg(stacks, title))
    scope = out_prefix.with_name(out_prefix.name + "-speedscope.json")
    scope.write_text(json.dumps(speedscope(stacks, title)))
    return {
        "tool": "py-spy",
        "gil_only": gil,
        "rate_hz": rate,
        "groups": groups(stacks),
        "samples": sum(count for _, count in stacks),
        "wall_s": run.wall_s,
        "top_self": top_frames(stacks),
        "files": {"flame_svg": str(svg), "speedscope": str(scope), "collapsed": str(collapsed)},
    }


def main() -> None:
    """`python -m bench.profile`: the flow over a fresh Avro input under py-spy, all samples or only the GIL's."""
    import argparse
    import tempfile

    from bench.common import REPO, Broker, say
    from bench.kafka import make_input

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="only samples of the thread holding the GIL")
    args = parser.parse_args()
    out = REPO / "bench" / "results"
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        broker = Broker(Path(tmp))
        try:
            inp = make_input(broker.bootstrap, args.events, args.partitions)
            stamp = "gil" if args.gil else "all"
            say(f"the flow under py-spy ({stamp} samples)...")
            found = profile_flow(
                broker.bootstrap, inp, Path(tmp) / "flow", out / f"profile-{stamp}", rate=args.rate, gil=args.gil
            )
        finally:
            broker.close()
    if "error" in found:
        sys.exit(found["error"])
    print(json.dumps({"samples": found["samples"], "groups": found["groups"], "files": found["files"]}, indent=1))


if __name__ == "__main__":
    main()
