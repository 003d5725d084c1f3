"""Gateway latency: POST execute → terminal SSE event of a 5-node workflow (p50/p99), and the delay
from a node finishing (its event's timestamp) to that event reaching an SSE client (target p50
≤ 20 ms). Prints ratios against a bare HTTP round trip through the same gateway (GET /healthz),
a plain asyncio HTTP responder (the floor of one round trip on this machine), and the previous run (bench/results/gateway.local.json).

    .venv/bin/python bench/gateway.py                      # starts `weft up` on a free port
    .venv/bin/python bench/gateway.py --url http://127.0.0.1:8080 --runs 200

Numbers on a shared 2-core machine are noisy: compare ratios, and several runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "gateway.local.json"

WORKFLOW = {
    "id": "bench_five",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "a", "type": "transform", "config": {"expression": "input.n + 1"}},
        {"id": "b", "type": "transform", "config": {"expression": "a * 2"}},
        {"id": "c", "type": "transform", "config": {"expression": "b - 1"}},
        {"id": "out", "type": "output", "config": {"value": "{{c}}"}},
    ],
    "edges": [
        {"source": "start", "target": "a"}, {"source": "a", "target": "b"},
        {"source": "b", "target": "c"}, {"source": "c", "target": "out"},
    ],
}
TERMINAL = {"execution:completed", "execution:failed", "execution:cancelled"}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def stack(url: str | None) -> Iterator[str]:
    """The gateway to measure: ``url``, or `weft up` started on a free port in a subprocess."""
    if url:
        yield url
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="weft-bench-") as data, \
            open(Path(data) / "up.log", "w") as log:
        proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "weft"), "up", "--http-port", str(port), "--data-dir", data],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "WEFT_LOG_LEVEL": "WARNING"},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(base + "/readyz").status_code == 200:
                        break
                if proc.poll() is not None:
                    sys.exit("weft up exited:\n" + (Path(data) / "up.log").read_text())
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            proc.wait(30)


BASELINE_SERVER = """
import asyncio, sys
BODY = b'{"status":"ok"}'
RESP = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: 15\\r\\n\\r\\n" + BODY
async def handle(r, w):
    try:
        while True:
            await r.readuntil(b"\\r\\n\\r\\n")
            w.write(RESP)
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        w.close()  # the client closed its connection
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""


@contextlib.contextmanager
def baseline_server() -> Iterator[str]:
    """A plain asyncio HTTP responder in its own process: the floor of one HTTP round trip."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER, str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                httpx.get(base + "/")
                break
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


async def round_trips(base: str, path: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(n):
            t = time.perf_counter()
            (await client.get(path)).raise_for_status()
            out.append(time.perf_counter() - t)
    return out


async def one_run(client: httpx.AsyncClient, n: int) -> tuple[float, list[float]]:
    """(seconds from POST to the terminal event, node:completed → client delays in seconds)."""
    delays: list[float] = []
    t0 = time.perf_counter()
    async with client.stream("POST", "/v1/executions", json={"workflow": WORKFLOW, "input": {"n": n}},
                             headers={"Accept": "text/event-stream"}) as resp:
        resp.raise_for_status()
        etype = None
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                etype = line[7:]
            elif line.startswith("data: ") and etype:
                now = time.time()
                if etype == "node:completed":
                    sent = datetime.fromisoformat(json.loads(line[6:])["timestamp"].replace("Z", "+00:00"))
                    delays.append(now - sent.timestamp())
                if etype in TERMINAL:
                    if etype != "execution:completed":
                        raise RuntimeError(f"run ended with {etype}: {line}")
                    return time.perf_counter() - t0, delays
    raise RuntimeError("stream ended without a terminal event")


async def measure(base: str, baseline: str, args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for i in range(args.warmup):
            await one_run(client, i)
        floor = await round_trips(baseline, "/", args.runs)
        rtt = await round_trips(base, "/healthz", args.runs)
        e2e, delays = [], []
        for i in range(args.runs):
            took, d = await one_run(client, i)
            e2e.append(took)
            delays.extend(d)
        t = time.perf_counter()
        burst = await asyncio.gather(*(one_run(client, i) for i in range(args.concurrency * 5)))
        burst_wall = time.perf_counter() - t

    ms = 1000.0
    result = {
        "runs": args.runs,
        "asyncio_rtt_p50_ms": statistics.median(floor) * ms,
        "healthz_p50_ms": statistics.median(rtt) * ms,
        "e2e_p50_ms": pct(e2e, 50) * ms, "e2e_p99_ms": pct(e2e, 99) * ms,
        "delay_p50_ms": pct(delays, 50) * ms, "delay_p99_ms": pct(delays, 99) * ms,
        "burst_runs": len(burst), "burst_runs_per_s": len(burst) / burst_wall,
        "burst_e2e_p50_ms": pct([b[0] for b in burst], 50) * ms,
    }
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    print(f"5-node workflow through the gateway, {args.runs} sequential runs (+{args.warmup} warm-up)")
    print(f"  plain asyncio HTTP round trip        p50 {result['asyncio_rtt_p50_ms']:7.2f} ms   (baseline)")
    print(f"  gateway GET /healthz round trip      p50 {result['healthz_p50_ms']:7.2f} ms   "
          f"({result['healthz_p50_ms'] / result['asyncio_rtt_p50_ms']:.1f}x the baseline)")
    print(f"  POST execute -> terminal SSE event   p50 {result['e2e_p50_ms']:7.2f} ms   "
          f"p99 {result['e2e_p99_ms']:7.2f} ms   "
          f"({result['e2e_p50_ms'] / result['healthz_p50_ms']:.1f}x a bare round trip)")
    target = "meets" if result["delay_p50_ms"] <= 20 else "MISSES"
    print(f"  node finished -> SSE event at client p50 {result['delay_p50_ms']:7.2f} ms   "
          f"p99 {result['delay_p99_ms']:7.2f} ms   ({target} the p50 <= 20 ms target)")
    print(f"  burst: {result['burst_runs']} runs, {args.concurrency * 5} in flight: "
          f"{result['burst_runs_per_s']:.1f} runs/s, p50 {result['burst_e2e_p50_ms']:.1f} ms")
    if previous:
        for key in ("e2e_p50_ms", "delay_p50_ms", "burst_runs_per_s"):
            if previous.get(key):
                print(f"  vs previous run: {key} {result[key] / previous[key]:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--url", help="a running gateway (default: start `weft up` on a free port)")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=10, help="runs in flight in the burst phase")
    args = ap.parse_args()
    with stack(args.url) as base, baseline_server() as baseline:
        asyncio.run(measure(base, baseline, args))


if __name__ == "__main__":
    main()
