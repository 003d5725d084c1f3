"""LLM streaming benchmark: a 2,000-chunk answer from the local fake OpenAI server.

Paths measured (each against the same fake server, on loopback):
  direct   httpx + httpx-sse reading the stream, nothing else (the baseline)
  handler  the `llm` node handler: SSE parse, tee to ctx.emit_chunk, accumulate, usage
  engine   a start → llm → output workflow through the executor's engine and an in-memory
           store; a chunk counts as arrived when the store write holding it returns (durable)
  gateway  the whole stack over HTTP: POST /v1/executions with Accept: text/event-stream
           (--base-url of a running gateway whose executor may call loopback); chunks reach
           the client on the live lane, before their coalesced commit (docs/llm.md)

Two measurements per path: throughput (chunks sent back to back: chunks/s, median of --runs)
and latency (--latency-chunks paced at --latency-interval-ms, default 500 at 10 ms = 100
tokens/s; each chunk carries the wall-clock time it was sent and the receiver subtracts: p50/p95
ms per chunk, and the added p50 over the direct stream).
Prints ratios against the direct baseline and against the previous run
(bench/results/llm_stream.json). Numbers on a shared 2-core machine are noisy.

    .venv/bin/python bench/llm_stream.py [--chunks 2000] [--runs 5] [--paths direct,handler]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
from httpx_sse import EventSource

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.fake_openai import FakeOpenAI, Reply  # noqa: E402

from weft_common.compiled import CompiledNode  # noqa: E402
from weft_common.workflow import definition_from_json  # noqa: E402
from weft_dag_builder import compile_workflow  # noqa: E402
from weft_executor import Engine  # noqa: E402
from weft_executor.handlers.base import NodeContext  # noqa: E402
from weft_executor.handlers.llm import LLMHandler  # noqa: E402
from weft_executor.memory_store import MemoryStore  # noqa: E402
from weft_executor.records import Commit  # noqa: E402
from weft_executor.settings import ExecutorSettings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "llm_stream.json"
_STAMP = re.compile(r"@(\d+);")

# A path: (fake, reply, on_chunk(text)) -> awaitable that completes when the answer is done.
Path_ = Callable[[FakeOpenAI, Reply, Callable[[str], None]], Awaitable[None]]


# The fake provider is on loopback: allow private addresses, as embedded mode does.
_SERVICES = SimpleNamespace(settings=ExecutorSettings.model_construct(http_allow_private=True))


class _Resolver:
    def render(self, value: Any) -> Any:
        return value

    def evaluate(self, expression: str) -> Any:
        raise NotImplementedError


def _body() -> dict[str, Any]:
    return {"model": "bench-model", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "bench"}]}


_direct_client: httpx.AsyncClient | None = None


async def path_direct(fake: FakeOpenAI, reply: Reply, on_chunk: Callable[[str], None]) -> None:
    """The baseline: one pooled client, SSE parsing, orjson, nothing else."""
    global _direct_client
    if _direct_client is None:
        _direct_client = httpx.AsyncClient(timeout=60, trust_env=False)
    fake.script(reply)
    async with _direct_client.stream(
        "POST", fake.base_url + "/chat/completions", json=_body()
    ) as resp:
        async for sse in EventSource(resp).aiter_sse():
            if sse.data == "[DONE]":
                continue
            obj = orjson.loads(sse.data)
            for choice in obj.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    on_chunk(text)


async def path_handler(fake: FakeOpenAI, reply: Reply, on_chunk: Callable[[str], None]) -> None:
    fake.script(reply)
    ctx = NodeContext(
        execution_id="bench", scope=(), attempt=1, resolver=_Resolver(),
        idempotency_key="bench", emit_chunk=on_chunk, services=_SERVICES,
        node=CompiledNode(id="chat", type="llm", config={
            "baseUrl": fake.base_url, "model": "bench-model", "apiKey": "k", "prompt": "bench"}),
    )
    result = await LLMHandler().execute(ctx)
    assert result.output["usage"]["estimated"] is False


class _ChunkStore(MemoryStore):
    """An in-memory store that reports each stream:chunk once the write holding it returned."""

    def __init__(self, on_chunk: Callable[[str], None]) -> None:
        super().__init__(execution_id="bench", keep=False)
        self.on_chunk = on_chunk

    async def write(self, commit: Commit) -> None:
        await super().write(commit)
        for ev in commit.events:
            if ev.type == "stream:chunk":
                self.on_chunk(ev.payload["content"])


_engine: Engine | None = None
_engine_runs = 0
ENGINE_WRITES: list[int] = []


async def path_engine(fake: FakeOpenAI, reply: Reply, on_chunk: Callable[[str], None]) -> None:
    """start -> llm -> output through the real engine; a chunk arrives when it is durable."""
    global _engine, _engine_runs
    if _engine is None:
        _engine = Engine(ExecutorSettings.model_construct(http_allow_private=True), environ={})
    fake.script(reply)
    dag = compile_workflow(definition_from_json({
        "id": "bench", "nodes": [
            {"id": "start", "type": "start"},
            {"id": "chat", "type": "llm", "config": {
                "baseUrl": fake.base_url, "model": "bench-model", "apiKey": "k",
                "prompt": "bench"}},
            {"id": "answer", "type": "output", "config": {"value": "{{chat.content}}"}}],
        "edges": [{"source": "start", "target": "chat"},
                  {"source": "chat", "target": "answer"}]}))
    store = _ChunkStore(on_chunk)
    _engine_runs += 1
    handle = _engine.start(execution_id=f"bench-{_engine_runs}", dag=dag, input={}, store=store)
    outcome = await handle.result()
    if outcome.status != "SUCCEEDED":
        raise AssertionError(f"engine run ended {outcome.status}: {outcome.error}")
    ENGINE_WRITES.append(store.commits)


_gateway_url = ""
_gateway_client: httpx.AsyncClient | None = None


def _gateway_workflow(fake: FakeOpenAI) -> dict[str, Any]:
    return {"id": "bench_llm", "nodes": [
        {"id": "start", "type": "start"},
        {"id": "chat", "type": "llm", "config": {
            "baseUrl": fake.base_url, "model": "bench-model", "apiKey": "k", "prompt": "bench"}},
        {"id": "answer", "type": "output", "config": {"value": "{{chat.content}}"}}],
        "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "answer"}]}


async def path_gateway(fake: FakeOpenAI, reply: Reply, on_chunk: Callable[[str], None]) -> None:
    """The whole path: POST /v1/executions with Accept: text/event-stream; a chunk arrives
    when its `stream:chunk` SSE event is parsed by this client."""
    global _gateway_client
    if _gateway_client is None:
        _gateway_client = httpx.AsyncClient(timeout=120, trust_env=False)
    fake.script(reply)
    terminal = ""
    async with _gateway_client.stream(
        "POST", _gateway_url + "/v1/executions",
        json={"workflow": _gateway_workflow(fake), "input": {}},
        headers={"Accept": "text/event-stream"},
    ) as resp:
        if resp.status_code != 200:
            raise AssertionError(f"gateway answered {resp.status_code}: {await resp.aread()!r}")
        async for sse in EventSource(resp).aiter_sse():
            if sse.event == "stream:chunk":
                on_chunk(orjson.loads(sse.data)["content"])
            elif sse.event.startswith("execution:") and sse.event != "execution:started":
                terminal = sse.event
    if terminal != "execution:completed":
        raise AssertionError(f"execution ended with {terminal or 'no terminal event'}")


def start_stack_process(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    """`weft up` on a free port in its own process (embedded: SQLite, in-process events;
    WEFT_DATABASE_URL / WEFT_REDIS_URL in the environment switch it to PostgreSQL + Redis)."""
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "weft"), "up", "--http-port", "0", "--data-dir", data_dir],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        env={**os.environ, "WEFT_LOG_LEVEL": "WARNING"},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        if not line and proc.poll() is not None:
            break
        m = re.search(r"Weft is up: (http://\S+)", line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("weft up did not start")


async def measure_throughput(path: Path_, fake: FakeOpenAI, n: int) -> float:
    got = 0

    def on_chunk(_text: str) -> None:
        nonlocal got
        got += 1

    t0 = time.perf_counter()
    await path(fake, Reply(chunks=[f"t{i} " for i in range(n)], usage=(5, n), flush_every=1),
               on_chunk)
    dt = time.perf_counter() - t0
    if got != n:
        raise AssertionError(f"expected {n} chunks, got {got}")
    return n / dt


async def measure_latency(path: Path_, fake: FakeOpenAI, n: int,
                          interval_ms: float) -> list[float]:
    lat: list[float] = []

    def on_chunk(text: str) -> None:
        now = time.time_ns()
        for m in _STAMP.finditer(text):
            lat.append((now - int(m.group(1))) / 1e6)

    await path(fake, Reply(chunks=[f"l{i}" for i in range(n)], usage=(5, n), stamp=True,
                           chunk_delay_s=interval_ms / 1000), on_chunk)
    if len(lat) != n:
        raise AssertionError(f"expected {n} stamped chunks, got {len(lat)}")
    return lat


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--paths", default="direct,handler,engine,gateway")
    ap.add_argument("--base-url", default="",
                    help="a running gateway for the gateway path (default: start `weft up`)")
    ap.add_argument("--latency-chunks", type=int, default=500)
    ap.add_argument("--latency-interval-ms", type=float, default=10.0,
                    help="pace of the latency answer (10 ms: 100 tokens/s, a fast real model)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()

    paths: dict[str, Path_] = {"direct": path_direct, "handler": path_handler,
                               "engine": path_engine, "gateway": path_gateway}
    wanted = [p for p in args.paths.split(",") if p]
    missing = [p for p in wanted if p not in paths]
    if missing:
        print(f"not available (yet): {', '.join(missing)}")
    wanted = [p for p in wanted if p in paths]
    if "direct" not in wanted:
        wanted.insert(0, "direct")

    global _gateway_url
    stack: subprocess.Popen[bytes] | None = None
    if "gateway" in wanted:
        if args.base_url:
            _gateway_url = args.base_url.rstrip("/")
        else:
            stack, _gateway_url = start_stack_process(tempfile.mkdtemp(prefix="weft-bench-"))
    try:
        results = await run_paths(paths, wanted, args)
    finally:
        if stack is not None:
            stack.terminate()
            stack.wait(30)
    report(results, args)


async def run_paths(paths: dict[str, Path_], wanted: list[str],
                    args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with FakeOpenAI() as fake:
        for name in wanted:  # warm up (connections, tokenizer, imports)
            await measure_throughput(paths[name], fake, 50)
        # Interleaved, so that a noisy neighbour hurts every path alike.
        rates: dict[str, list[float]] = {name: [] for name in wanted}
        for _ in range(args.runs):
            for name in wanted:
                rates[name].append(await measure_throughput(paths[name], fake, args.chunks))
        for name in wanted:
            lat = await measure_latency(paths[name], fake, args.latency_chunks,
                                        args.latency_interval_ms)
            results[name] = {
                "chunks_per_s": statistics.median(rates[name]),
                "latency_p50_ms": _pct(lat, 0.5),
                "latency_p95_ms": _pct(lat, 0.95),
            }
    return results


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    previous: dict[str, Any] = {}
    if RESULTS.exists():
        previous = json.loads(RESULTS.read_text()).get("results", {})
    base = results["direct"]
    print(f"llm_stream: throughput = {args.chunks} chunks back to back, median of {args.runs} "
          f"runs; latency = {args.latency_chunks} chunks, one per {args.latency_interval_ms} ms "
          "(shared 2-core machine: noisy)")
    print(f"{'path':<9}{'chunks/s':>11}{'vs direct':>11}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'+p50 ms':>11}{'vs prev':>9}")
    for name, r in results.items():
        prev = previous.get(name, {}).get("chunks_per_s")
        vs_prev = f"{r['chunks_per_s'] / prev:.2f}x" if prev else "-"
        print(f"{name:<9}{r['chunks_per_s']:>11.0f}{r['chunks_per_s'] / base['chunks_per_s']:>10.2f}x"
              f"{r['latency_p50_ms']:>9.2f}{r['latency_p95_ms']:>9.2f}"
              f"{r['latency_p50_ms'] - base['latency_p50_ms']:>11.2f}{vs_prev:>9}")
    if ENGINE_WRITES:
        print(f"engine: store writes per {args.chunks}-chunk answer: "
              f"{sorted(ENGINE_WRITES)[len(ENGINE_WRITES) // 2]} (median; "
              f"event_flush_ms={ExecutorSettings.model_construct().event_flush_ms})")
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"chunks": args.chunks, "runs": args.runs,
                                       "latency_chunks": args.latency_chunks,
                                       "latency_interval_ms": args.latency_interval_ms,
                                       "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
