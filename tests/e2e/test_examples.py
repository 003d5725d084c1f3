"""Every workflow in examples/ runs on the real stack, with local stand-ins for its upstreams."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from helpers.fake_openai import FakeOpenAI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.timeout(180)


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


class Upstream:
    """A JSONPlaceholder-shaped API plus an /orders endpoint that rejects order A-1002."""

    def __init__(self) -> None:
        self.orders: list[Any] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                user = int(parse_qs(url.query).get("userId", ["0"])[0])
                if url.path == "/users/1":
                    return self._send(200, {"id": 1, "name": "Leanne Graham", "email": "leanne@example.test"})
                if url.path == "/posts" and user == 1:
                    return self._send(200, [{"id": i, "userId": 1, "title": f"post {i}"} for i in (1, 2, 3)])
                if url.path == "/todos" and user == 1:
                    return self._send(200, [{"id": i, "completed": i % 2 == 0} for i in range(1, 6)])
                return self._send(404, {"error": "no such thing"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                owner.orders.append(body)
                if body["order"]["id"] == "A-1002":
                    return self._send(500, {"error": "warehouse down"})
                return self._send(201, {"accepted": body["order"]["id"]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    thread = threading.Thread(target=up.server.serve_forever, daemon=True)
    thread.start()
    yield up
    up.server.shutdown()
    up.server.server_close()


async def run(api: httpx.AsyncClient, workflow: dict[str, Any], input: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute with Accept: text/event-stream; returns (the final execution, its events)."""
    events: list[dict[str, Any]] = []
    async with api.stream("POST", "/v1/executions", json={"workflow": workflow, "input": input},
                          headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200, await resp.aread()
        eid = resp.headers["weft-execution-id"]
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["type"] == "execution:paused":
                    break
    return (await api.get(f"/v1/executions/{eid}")).json(), events


async def test_demo(api: httpx.AsyncClient) -> None:
    execution, events = await run(api, example("demo.json"), {})
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["outputs"]["invoice"] == {"subtotal": 120.5, "total": 108.45, "discount": True}
    assert {e.get("nodeId") for e in events if e["type"] == "node:skipped"} == {"full_price"}


async def test_http_fanout_join(api: httpx.AsyncClient, upstream: Upstream) -> None:
    execution, events = await run(api, example("http_fanout.json"), {"baseUrl": upstream.url, "userId": 1})
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["outputs"] == {"profile": {
        "name": "Leanne Graham", "email": "leanne@example.test", "posts": 3,
        "latestPost": "post 3", "openTodos": 3}}
    started = [e["nodeId"] for e in events if e["type"] == "node:started"]
    first_done = next(i for i, e in enumerate(events) if e["type"] == "node:completed" and e["nodeId"] != "start")
    # The three calls all start before any of them completes: a real fan-out.
    assert {"user", "posts", "todos"} <= {e.get("nodeId") for e in events[:first_done] if e["type"] == "node:started"}
    assert started.index("join") > max(started.index(n) for n in ("user", "posts", "todos"))


async def test_approval(api: httpx.AsyncClient) -> None:
    small, _ = await run(api, example("approval.json"), {"employee": "kim", "amount": 20})
    assert small["outputs"] == {"result": "paid 20 to kim (approved by policy)"}
    big, _ = await run(api, example("approval.json"), {"employee": "kim", "amount": 240})
    assert big["status"] == "PAUSED"
    assert big["pausedNodes"][0]["reason"] == "kim asks for 240: approve?"
    eid = big["executionId"]
    resume = await api.post(f"/v1/executions/{eid}/resume", json={"nodeId": "manager", "input": {"approved": False, "by": "sam"}})
    assert resume.status_code == 202
    for _ in range(300):
        done = (await api.get(f"/v1/executions/{eid}")).json()
        if done["status"] not in ("PAUSED", "RUNNING"):
            break
        await asyncio.sleep(0.1)
    assert done["outputs"] == {"result": "rejected by sam"}


async def test_loop_error_routing(api: httpx.AsyncClient, upstream: Upstream) -> None:
    orders = json.loads((EXAMPLES / "inputs" / "orders.json").read_text())["orders"]
    execution, events = await run(api, example("loop_error_routing.json"),
                                  {"endpoint": f"{upstream.url}/orders", "orders": orders})
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["outputs"] == {"report": {"sent": 2, "failed": ["A-1002"]}}
    assert len([e for e in events if e["type"] == "node:retrying" and e["nodeId"] == "push"]) == 2
    assert [o["order"]["id"] for o in upstream.orders].count("A-1002") == 3  # maxAttempts


async def test_llm_summarizer(api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as fake:
        monkeypatch.setenv("WEFT_LLM_BASE_URL", fake.base_url)
        monkeypatch.setenv("WEFT_LLM_MODEL", "fake-model")
        monkeypatch.setenv("WEFT_LLM_API_KEY", "sk-test-not-a-secret")
        execution, events = await run(api, example("llm_summarizer.json"), {"text": "Weft runs workflows."})
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["outputs"]["summary"] == "Hello world"
    assert execution["outputs"]["usage"] == {"inputTokens": 7, "outputTokens": 2, "estimated": False}
    chunks = [e["content"] for e in events if e["type"] == "stream:chunk"]
    assert "".join(chunks) == "Hello world"
    assert "sk-test-not-a-secret" not in json.dumps([execution, events])
