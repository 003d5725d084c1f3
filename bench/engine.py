"""Engine benchmarks (issue 3), in memory, printing ratios against a plain asyncio baseline and
against the previous run (kept in ``bench/results/engine.json``).

    .venv/bin/python bench/engine.py [--quick]

1. Overhead per node: a 1,000-node chain of no-op nodes through the engine, minus a plain asyncio
   loop awaiting the same handler 1,000 times (target <= 50 us/node).
2. Executions per second: a 10-node workflow, 20 executions in flight (target >= 1,500/s).
3. Fan-out: 100 branches of 100 ms I/O (the real ``wait`` handler) - wall time vs the 100 ms ideal
   (target <= 1.1x).
4. One JSONata ``transform`` node: its cost over a no-op node, reported separately.

The shared 2-core machine makes numbers noisy: every figure is the best of a few repeats.

Garbage collector: by default the benchmarks run with the collector set up as the executor sets
it up at start-up (``weft_executor.engine.tune_gc``: ``gc.freeze()`` plus larger thresholds,
applied by ``ExecutorService.start``, so by ``weft up`` too): that is what the service runs with.
``--gc-default`` keeps the interpreter's defaults instead (results kept apart, ``*-gc-default``).
``bench/containers.py`` imports the helpers below.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, ClassVar

import weft_executor.handlers  # noqa: F401 - registers the built-in handlers
from weft_common.compiled import CompiledDag
from weft_common.workflow import definition_from_json
from weft_dag_builder import compile_workflow
from weft_executor import Engine
from weft_executor.engine import tune_gc
from weft_executor.handlers.base import HANDLERS, NodeContext, NodeResult
from weft_executor.memory_store import MemoryStore
from weft_executor.settings import ExecutorSettings

RESULTS = Path(__file__).parent / "results"


# ---------------------------------------------------------------- shared helpers
class NoOp:
    """Stands in for ``wait`` nodes named ``noop`` (returns at once) or ``sleep10`` (sleeps 10 ms);
    other ``wait`` nodes keep the real handler."""

    type: ClassVar[str] = "wait"

    def __init__(self, real: Any) -> None:
        self.real = real

    async def execute(self, ctx: NodeContext) -> NodeResult:
        name = ctx.node.name
        if name == "noop":
            return NodeResult(output=None)
        if name == "sleep10":  # an I/O body: 10 ms of waiting, no work
            await asyncio.sleep(0.010)
            return NodeResult(output=None)
        return await self.real.execute(ctx)  # type: ignore[no-any-return]


def install_noop() -> NoOp:
    current = HANDLERS["wait"]
    if isinstance(current, NoOp):
        return current
    noop = NoOp(current)
    HANDLERS["wait"] = noop
    return noop


def noop_node(id: str, **kw: Any) -> dict[str, Any]:
    return {"id": id, "type": "wait", "name": "noop", "config": {"durationMs": 0}, **kw}


def workflow(
    nodes: list[dict[str, Any]], edges: list[tuple[str, str]], **extra: Any
) -> dict[str, Any]:
    return {
        "id": "bench",
        "nodes": [{"id": "start", "type": "start"}, *nodes],
        "edges": [{"source": a, "target": b} for a, b in edges],
        **extra,
    }


def compile_json(wf: dict[str, Any]) -> CompiledDag:
    return compile_workflow(definition_from_json(wf))


def make_engine(**overrides: Any) -> Engine:
    return Engine(ExecutorSettings(**{"http_allow_private": True, **overrides}), environ={})


class Clock:
    """Wall and CPU time of a block (CPU time is what other processes on a shared machine
    cannot inflate much; both are reported)."""

    def __enter__(self) -> Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


async def execute(
    engine: Engine,
    dag: CompiledDag,
    input: Any = None,
    *,
    keep: bool = True,
    execution_id: str = "bench",
) -> None:
    """Run one execution to its end; raises when it did not succeed."""
    store = MemoryStore(execution_id=execution_id, keep=keep)
    outcome = await engine.start(
        execution_id=execution_id, dag=dag, input=input, store=store
    ).result()
    if outcome.status != "SUCCEEDED":
        raise SystemExit(f"benchmark execution ended {outcome.status}: {outcome.error}")


async def timed(fn: Any, repeats: int) -> Clock:
    """The fastest (by wall time) of ``repeats`` runs of the coroutine function ``fn``."""
    clocks = []
    for _ in range(repeats):
        with Clock() as c:
            await fn()
        clocks.append(c)
    return min(clocks, key=lambda c: c.wall)


async def run_once(
    engine: Engine,
    dag: CompiledDag,
    input: Any = None,
    *,
    keep: bool = True,
    execution_id: str = "bench",
) -> float:
    """Wall time of one execution to its end (seconds)."""
    with Clock() as c:
        await execute(engine, dag, input, keep=keep, execution_id=execution_id)
    return c.wall


def previous_results(name: str) -> dict[str, Any]:
    """The results kept by the previous run of benchmark ``name`` (none: empty)."""
    path = RESULTS / f"{name}.json"
    try:
        return dict(json.loads(path.read_text()).get("results", {}))
    except (OSError, ValueError):
        return {}


def keep_results(name: str, results: dict[str, Any], **about: Any) -> None:
    """Keep this run of benchmark ``name`` (with when, and ``about`` it) for the next run."""
    RESULTS.mkdir(exist_ok=True)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    payload = {"at": at, **about, "results": results}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"  kept in bench/results/{name}.json")


def paired_ratios(measured: list[float], baseline: list[float]) -> dict[str, Any]:
    """The median and quartiles of ``measured[i] / baseline[i]``: each round against the
    baseline of the same round (measured just before), so the machine's drift cancels out."""
    ratios = sorted(m / b for m, b in zip(measured, baseline, strict=True))
    quartiles = [ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]]
    return {"median": statistics.median(ratios), "quartiles": quartiles}


def report(name: str, results: dict[str, dict[str, Any]]) -> None:
    """Print each metric with its target and the ratio to the previous run; keep this run."""
    previous = previous_results(name)
    print(
        f"\n{name}: {platform.python_implementation()} {platform.python_version()} "
        f"(shared 2-core machine: numbers are noisy, best of repeats)"
    )
    for key, r in results.items():
        line = f"  {key:<40} {r['value']:>11.2f} {r['unit']:<7}"
        if "ratio" in r:
            line += f" {r['ratio']:>6.2f}x {r.get('ratio_of', ''):<24}"
        if "target" in r:
            line += f" target {r['target']:<10} {'OK' if r['ok'] else 'MISSED'}"
        prev = previous.get(key)
        if prev and prev.get("value"):
            line += f"  ({r['value'] / prev['value']:.2f}x previous)"
        print(line)
    keep_results(name, results)


# ---------------------------------------------------------------- the engine benchmarks
def chain(n: int, node: Any = noop_node) -> dict[str, Any]:
    ids = [f"n{i}" for i in range(n)]
    return workflow([node(i) for i in ids], list(zip(["start", *ids[:-1]], ids, strict=True)))


async def baseline_chain(n: int) -> float:
    """A plain asyncio loop awaiting the same no-op handler ``n`` times."""
    handler = install_noop()
    dag = compile_json(chain(1))
    node = dag.nodes["n0"]
    t0 = time.perf_counter()
    for i in range(n):
        ctx = NodeContext(
            execution_id="b",
            node=node,
            scope=(),
            attempt=1,
            resolver=None,  # type: ignore[arg-type]
            idempotency_key=f"b:{i}",
            emit_chunk=lambda c: None,
        )
        await handler.execute(ctx)
    return time.perf_counter() - t0


async def bench_chain(repeats: int) -> dict[str, dict[str, Any]]:
    install_noop()
    n = 1000
    dag = compile_json(chain(n))
    engine = make_engine()
    await run_once(engine, dag)  # warm up
    eng = await timed(lambda: execute(engine, dag), repeats)
    base = await timed(lambda: baseline_chain(n), repeats)
    per_node = (eng.wall - base.wall) / (n + 1) * 1e6
    per_node_cpu = (eng.cpu - base.cpu) / (n + 1) * 1e6
    return {
        "chain_1000_noop_overhead_per_node": {
            "value": per_node,
            "unit": "us",
            "target": "<= 50",
            "ok": per_node <= 50,
            "ratio": eng.wall / base.wall,
            "ratio_of": "engine/plain asyncio",
        },
        "chain_1000_noop_overhead_per_node_cpu": {
            "value": per_node_cpu,
            "unit": "us cpu",
            "target": "<= 50",
            "ok": per_node_cpu <= 50,
        },
        "chain_1000_noop_wall": {"value": eng.wall * 1000, "unit": "ms"},
    }


def ten_nodes() -> dict[str, Any]:
    """start -> a -> (b, c, d) -> e -> (f, g) -> h -> i: ten nodes, forks and joins."""
    names = "abcdefghi"
    edges = [
        ("start", "a"),
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "e"),
        ("c", "e"),
        ("d", "e"),
        ("e", "f"),
        ("e", "g"),
        ("f", "h"),
        ("g", "h"),
        ("h", "i"),
    ]
    return workflow([noop_node(x) for x in names], edges)


async def bench_throughput(total: int, in_flight: int, repeats: int) -> dict[str, dict[str, Any]]:
    install_noop()
    dag = compile_json(ten_nodes())
    engine = make_engine()

    async def batch() -> None:
        sem = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with sem:
                await execute(engine, dag, execution_id=f"e{i}")

        await asyncio.gather(*(one(i) for i in range(total)))

    await batch()
    clock = await timed(batch, repeats)
    rate, rate_cpu = total / clock.wall, total / clock.cpu
    return {
        "executions_per_s_10_nodes_20_in_flight": {
            "value": rate,
            "unit": "/s",
            "target": ">= 1500",
            "ok": rate >= 1500,
        },
        "executions_per_cpu_s_10_nodes_20_in_flight": {
            "value": rate_cpu,
            "unit": "/cpu s",
            "target": ">= 1500",
            "ok": rate_cpu >= 1500,
        },
    }


async def bench_fan_out(repeats: int) -> dict[str, dict[str, Any]]:
    install_noop()
    ids = [f"w{i}" for i in range(100)]
    wf = workflow(
        [{"id": i, "type": "wait", "config": {"durationMs": 100}} for i in ids],
        [("start", i) for i in ids],
    )
    dag = compile_json(wf)
    engine = make_engine()
    await run_once(engine, dag)
    wall = min([await run_once(engine, dag) for _ in range(repeats)])
    ratio = wall / 0.1
    return {
        "fan_out_100x100ms_wall": {
            "value": wall * 1000,
            "unit": "ms",
            "ratio": ratio,
            "ratio_of": "of the 100 ms ideal",
            "target": "<= 1.1x",
            "ok": ratio <= 1.1,
        }
    }


async def bench_transform(repeats: int) -> dict[str, dict[str, Any]]:
    install_noop()
    n = 300

    def transform(id: str) -> dict[str, Any]:
        return {"id": id, "type": "transform", "config": {"expression": "$count(start.xs) + 1"}}

    engine = make_engine()
    t_dag = compile_json(chain(n, transform))
    n_dag = compile_json(chain(n))
    inp = {"xs": [1, 2, 3]}
    await run_once(engine, t_dag, inp)
    t = min([await run_once(engine, t_dag, inp) for _ in range(repeats)])
    z = min([await run_once(engine, n_dag, inp) for _ in range(repeats)])
    cost = (t - z) / n * 1e6
    return {
        "jsonata_transform_node_extra_cost": {
            "value": cost,
            "unit": "us",
            "ratio": t / z,
            "ratio_of": "transform/no-op chain",
        }
    }


def setup_gc(default: bool) -> str:
    """The executor's own collector set-up (``tune_gc``, as ``ExecutorService.start`` applies
    it), unless ``default``; returns the results-name suffix."""
    if default:
        return "-gc-default"
    tune_gc()
    return ""


async def main(quick: bool) -> None:
    repeats = 3 if quick else 5
    results: dict[str, dict[str, Any]] = {}
    results.update(await bench_chain(repeats))
    results.update(await bench_throughput(500 if quick else 3000, 20, repeats))
    results.update(await bench_fan_out(repeats))
    results.update(await bench_transform(repeats))
    report("engine" + GC_SUFFIX, results)
    print(f"  gc thresholds {gc.get_threshold()}, frozen objects {gc.get_freeze_count()}")


GC_SUFFIX = ""

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer executions and repeats")
    ap.add_argument(
        "--gc-default",
        action="store_true",
        help="the interpreter's gc defaults instead of the executor's tune_gc (results kept apart)",
    )
    args = ap.parse_args()
    GC_SUFFIX = setup_gc(args.gc_default)
    asyncio.run(main(args.quick))
