"""LLM streaming benchmark: a 2,000-chunk answer from the local fake OpenAI server.

Paths measured (each against the same fake server, on loopback):
  direct   httpx + httpx-sse reading the stream, nothing else (the baseline)
  handler  the `llm` node handler: SSE parse, tee to ctx.emit_chunk, accumulate, usage
  engine   a start → llm → output workflow through the executor's engine and an in-memory
           store; a chunk counts as arrived when the store write holding it returns (durable)
  gateway  the whole stack over HTTP: POST /v1/executions with Accept: text/event-stream
           (--base-url of a running gateway whose executor may call loopback)

Two measurements per path: throughput (chunks sent back to back: chunks/s, median of --runs)
and latency (one chunk per ~1 ms; each chunk carries the wall-clock time it was sent, the
receiver subtracts: p50/p95 ms per chunk, and the added p50 over the direct stream).
Prints ratios against the direct baseline and against the previous run
(bench/results/llm_stream.json). Numbers on a shared 2-core machine are noisy.

    .venv/bin/python bench/llm_stream.py [--chunks 2000] [--runs 5] [--paths direct,handler]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
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
from weft_executor.handlers.base import NodeContext  # noqa: E402
from weft_executor.handlers.llm import LLMHandler  # noqa: E402
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


def _engine_path() -> Path_ | None:
    try:
        from bench_llm_engine import path_engine  # type: ignore[import-not-found]
    except ImportError:
        return None
    return path_engine  # type: ignore[no-any-return]


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


async def measure_latency(path: Path_, fake: FakeOpenAI, n: int) -> list[float]:
    lat: list[float] = []

    def on_chunk(text: str) -> None:
        now = time.time_ns()
        for m in _STAMP.finditer(text):
            lat.append((now - int(m.group(1))) / 1e6)

    await path(fake, Reply(chunks=[f"l{i}" for i in range(n)], usage=(5, n), stamp=True,
                           chunk_delay_s=0.001), on_chunk)
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
    ap.add_argument("--paths", default="direct,handler,engine")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()

    paths: dict[str, Path_] = {"direct": path_direct, "handler": path_handler}
    engine = _engine_path()
    if engine is not None:
        paths["engine"] = engine
    wanted = [p for p in args.paths.split(",") if p]
    missing = [p for p in wanted if p not in paths]
    if missing:
        print(f"not available (yet): {', '.join(missing)}")
    wanted = [p for p in wanted if p in paths]
    if "direct" not in wanted:
        wanted.insert(0, "direct")

    results: dict[str, dict[str, float]] = {}
    with FakeOpenAI() as fake:
        for name in wanted:
            path = paths[name]
            await measure_throughput(path, fake, 50)  # warm up (connections, tokenizer, JIT)
            rates = [await measure_throughput(path, fake, args.chunks) for _ in range(args.runs)]
            lat = await measure_latency(path, fake, args.chunks)
            results[name] = {
                "chunks_per_s": statistics.median(rates),
                "latency_p50_ms": _pct(lat, 0.5),
                "latency_p95_ms": _pct(lat, 0.95),
            }

    previous: dict[str, Any] = {}
    if RESULTS.exists():
        previous = json.loads(RESULTS.read_text()).get("results", {})
    base = results["direct"]
    print(f"llm_stream: {args.chunks} chunks, median of {args.runs} runs "
          "(shared 2-core machine: noisy)")
    print(f"{'path':<9}{'chunks/s':>11}{'vs direct':>11}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'+p50 ms':>11}{'vs prev':>9}")
    for name, r in results.items():
        prev = previous.get(name, {}).get("chunks_per_s")
        vs_prev = f"{r['chunks_per_s'] / prev:.2f}x" if prev else "-"
        print(f"{name:<9}{r['chunks_per_s']:>11.0f}{r['chunks_per_s'] / base['chunks_per_s']:>10.2f}x"
              f"{r['latency_p50_ms']:>9.2f}{r['latency_p95_ms']:>9.2f}"
              f"{r['latency_p50_ms'] - base['latency_p50_ms']:>11.2f}{vs_prev:>9}")
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"chunks": args.chunks, "runs": args.runs,
                                       "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
