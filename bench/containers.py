"""Container benchmarks (issue 4), in memory, printing ratios and the change against the previous
run (kept in ``bench/results/containers.json``).

    .venv/bin/python bench/containers.py [--quick]

1. A 10,000-iteration ``for`` loop of trivial bodies (one no-op node): per-iteration overhead
   (target <= 100 us) and peak RSS growth while it runs (target <= 50 MB). The store is an
   in-memory one that does not keep what it is given (in production it is the state service, in
   another process), so the RSS is the engine's.
2. A 10,000-branch ``parallel`` of 10 ms I/O bodies (``asyncio.sleep``) with ``maxConcurrency``
   500: wall time against the ideal 10,000 / 500 x 10 ms = 0.2 s (target <= 1.5x), and CPU time
   against a plain asyncio pool of 500 tasks doing the same sleeps. Best of 3 runs (the median
   is printed too), as in ``bench/engine.py``; the RSS is sampled in a first run of its own.

The shared 2-core machine makes numbers noisy: CPU time is reported next to wall time. The
garbage collector is set up as the executor sets it up (see ``bench/engine.py``; ``--gc-default``
for the interpreter's defaults, results kept apart).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from engine import (
    Clock,
    compile_json,
    execute,
    install_noop,
    make_engine,
    noop_node,
    report,
    setup_gc,
)


class PeakRss:
    """Samples this process's RSS every few milliseconds from a thread; ``growth`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.proc = psutil.Process()
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.base = self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base


def loop_workflow(n: int) -> dict[str, Any]:
    return {
        "id": "bench_loop",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "L", "type": "loop", "config": {"kind": "for", "count": n, "maxIterations": n}},
            noop_node("body", parent="L"),
        ],
        "edges": [{"source": "start", "target": "L"}],
    }


def parallel_workflow(n: int, concurrency: int) -> dict[str, Any]:
    return {
        "id": "bench_parallel",
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "P",
                "type": "parallel",
                "config": {"kind": "count", "count": n, "maxConcurrency": concurrency},
            },
            {
                "id": "io",
                "type": "wait",
                "name": "sleep10",
                "parent": "P",
                "config": {"durationMs": 10},
            },
        ],
        "edges": [{"source": "start", "target": "P"}],
    }


async def bench_loop(n: int) -> dict[str, dict[str, Any]]:
    install_noop()
    engine = make_engine()
    await execute(engine, compile_json(loop_workflow(100)), keep=False)  # warm up
    dag = compile_json(loop_workflow(n))
    with PeakRss() as rss, Clock() as clock:
        await execute(engine, dag, keep=False)
    per_it = clock.wall / n * 1e6
    per_it_cpu = clock.cpu / n * 1e6
    mb = rss.growth / 2**20
    return {
        f"loop_{n}_per_iteration": {
            "value": per_it,
            "unit": "us",
            "target": "<= 100",
            "ok": per_it <= 100,
        },
        f"loop_{n}_per_iteration_cpu": {
            "value": per_it_cpu,
            "unit": "us cpu",
            "target": "<= 100",
            "ok": per_it_cpu <= 100,
        },
        f"loop_{n}_peak_rss_growth": {"value": mb, "unit": "MB", "target": "<= 50", "ok": mb <= 50},
    }


async def plain_asyncio_pool(n: int, concurrency: int) -> Clock:
    """The same work without an engine: ``concurrency`` tasks sleeping 10 ms ``n`` times in all."""
    items = iter(range(n))

    async def worker() -> None:
        for _ in items:
            await asyncio.sleep(0.010)

    with Clock() as clock:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return clock


async def bench_parallel(n: int, concurrency: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Best (and median) of ``repeats`` timed runs, each next to a plain asyncio pool run; the
    RSS in a first run of its own (the sampling thread takes the GIL every few ms)."""
    install_noop()
    engine = make_engine(max_concurrency_per_execution=concurrency)
    await execute(engine, compile_json(parallel_workflow(200, concurrency)), keep=False)
    dag = compile_json(parallel_workflow(n, concurrency))
    with PeakRss() as rss:
        await execute(engine, dag, keep=False)
    runs: list[Clock] = []
    bases: list[Clock] = []
    for _ in range(repeats):
        with Clock() as clock:
            await execute(engine, dag, keep=False)
        runs.append(clock)
        bases.append(await plain_asyncio_pool(n, concurrency))
    clock = min(runs, key=lambda c: c.wall)
    base = min(bases, key=lambda c: c.wall)
    median = sorted(c.wall for c in runs)[len(runs) // 2]
    ideal = n / concurrency * 0.010
    ratio = clock.wall / ideal
    return {
        f"parallel_{n}x10ms_c{concurrency}_wall": {
            "value": clock.wall * 1000,
            "unit": "ms",
            "ratio": ratio,
            "ratio_of": f"of the {ideal * 1000:.0f} ms ideal",
            "target": "<= 1.5x",
            "ok": ratio <= 1.5,
        },
        f"parallel_{n}x10ms_c{concurrency}_wall_median": {
            "value": median * 1000,
            "unit": "ms",
            "ratio": median / ideal,
            "ratio_of": f"of the {ideal * 1000:.0f} ms ideal",
        },
        f"parallel_{n}x10ms_c{concurrency}_cpu": {
            "value": clock.cpu * 1000,
            "unit": "ms cpu",
            "ratio": clock.cpu / base.cpu,
            "ratio_of": "engine/plain asyncio cpu",
        },
        f"plain_asyncio_{n}x10ms_c{concurrency}_wall": {
            "value": base.wall * 1000,
            "unit": "ms",
            "ratio": base.wall / ideal,
            "ratio_of": f"of the {ideal * 1000:.0f} ms ideal",
        },
        f"parallel_{n}x10ms_c{concurrency}_peak_rss_growth": {
            "value": rss.growth / 2**20,
            "unit": "MB",
        },
    }


async def main(quick: bool) -> None:
    n = 2000 if quick else 10_000
    results: dict[str, dict[str, Any]] = {}
    results.update(await bench_loop(n))
    results.update(await bench_parallel(n, 500, 3))
    report("containers" + GC_SUFFIX, results)
    print(f"  gc thresholds {gc.get_threshold()}, frozen objects {gc.get_freeze_count()}")


GC_SUFFIX = ""

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 instead of 10,000")
    ap.add_argument(
        "--gc-default",
        action="store_true",
        help="the interpreter's gc defaults instead of the executor's tune_gc (results kept apart)",
    )
    args = ap.parse_args()
    GC_SUFFIX = setup_gc(args.gc_default)
    asyncio.run(main(args.quick))
