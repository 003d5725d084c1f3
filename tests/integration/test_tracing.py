"""One execution through the whole stack is ONE trace: the gateway's HTTP span, the gRPC hops to
the executor, dag-builder and state service, the SQL statements, the execution span with its node
spans, and the outbound HTTP request of an ``http`` node, whose ``traceparent`` the upstream
receives. A paused execution resumed later links its new trace to the first one. An execution
run by another replica than the one that took the request (its first run, or a sub-workflow's
child) continues the same trace through the trace context stored with the execution.

All four services run in this process on free ports with the in-memory test exporter, the way
``weft up`` runs them (one provider for the process; spans are told apart by ``rpc.service``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.db import (
    REDIS_URL,
    Backend,
    check_redis,
    create_postgres_database,
    drop_postgres_database,
    flush_redis_prefix,
    postgres_url,
    random_name,
)
from helpers.http_server import HttpTestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from weft_common.telemetry import TestTelemetry, telemetry_for_tests
from weft_dag_builder.server import serve as serve_dag_builder
from weft_dag_builder.settings import DagBuilderSettings
from weft_executor.server import serve as serve_executor
from weft_executor.settings import ExecutorSettings
from weft_state.server import serve as serve_state
from weft_state.settings import StateSettings
from weft_stream_gateway.server import serve as serve_gateway
from weft_stream_gateway.settings import GatewaySettings

EXECUTOR = "weft.executor.v1.ExecutorService"
STATE = "weft.state.v1.StateService"
DAG_BUILDER = "weft.dagbuilder.v1.DagBuilderService"


@dataclass
class Stack:
    gateway_url: str
    services: list[Any]

    async def stop(self) -> None:
        for service in reversed(self.services):
            await service.stop()


@pytest.fixture
def tel() -> Iterator[TestTelemetry]:
    t = telemetry_for_tests()  # before the services start: their channels pick interceptors then
    yield t
    t.stop()


@pytest.fixture
def upstream() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        yield server


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'weft.db'}", "")
        return
    try:
        await check_redis()
        database = await create_postgres_database(random_name("weft_trace_"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    prefix = random_name("weft_trace_") + ":"
    yield Backend("postgres", postgres_url(database), REDIS_URL, prefix)
    await drop_postgres_database(database)
    await flush_redis_prefix(prefix)


@pytest.fixture
async def stack(tel: TestTelemetry, backend: Backend) -> AsyncIterator[Stack]:
    grace = {"grpc_shutdown_grace_s": 0.5}
    state = await serve_state(
        StateSettings(
            port=0,
            database_url=backend.database_url,
            redis_url=backend.redis_url,
            redis_prefix=backend.redis_prefix,
            stream_poll_ms=300,
            claim_poll_ms=50,
            **grace,
        )
    )
    dag_builder = await serve_dag_builder(DagBuilderSettings(port=0, **grace))
    addrs = {
        "state_addr": f"127.0.0.1:{state.port}",
        "dag_builder_addr": f"127.0.0.1:{dag_builder.port}",
    }
    executor = await serve_executor(
        ExecutorSettings(
            port=0,
            lease_ms=3000,
            heartbeat_ms=300,
            claim_poll_ms=250,
            http_allow_private=True,
            **addrs,
            **grace,
        )
    )
    gateway = await serve_gateway(
        GatewaySettings(
            embedded=True,
            http_host="127.0.0.1",
            http_port=0,
            api_tokens="",
            sse_heartbeat_s=0.2,
            executor_addr=f"127.0.0.1:{executor.port}",
            **addrs,
        )
    )
    running = Stack(f"http://127.0.0.1:{gateway.port}", [state, dag_builder, executor, gateway])
    yield running
    await running.stop()


async def _wait_status(
    client: httpx.AsyncClient, execution_id: str, *statuses: str
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(300):
        body = (await client.get(f"/v1/executions/{execution_id}")).json()
        if body.get("status") in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"execution {execution_id} never reached {statuses}: {body}")


async def _settle(tel: TestTelemetry, predicate: Any) -> list[ReadableSpan]:
    """Spans end a little after the response that the test saw (the engine closes its execution
    span after the final commit): wait until ``predicate(spans)`` holds."""
    spans: list[ReadableSpan] = []
    for _ in range(100):
        spans = tel.spans()
        if predicate(spans):
            return spans
        await asyncio.sleep(0.05)
    return spans


def _attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    current = span
    while current.parent is not None and current.parent.span_id in by_id:
        current = by_id[current.parent.span_id]
        chain.append(current)
    return chain

@contextlib.asynccontextmanager
async def _replica_stack(
    backend: Backend, *, a: dict[str, Any], b: dict[str, Any] | None
) -> AsyncIterator[tuple[str, Any, Any]]:
    """State, dag-builder, executor replica A (and B, unless ``b`` is None) and a gateway that
    sends StartExecution to A; ``a``/``b`` are each replica's ExecutorSettings overrides.
    Yields (gateway URL, replica A, replica B or None); stops everything on the way out."""
    grace = {"grpc_shutdown_grace_s": 0.5}
    services: list[Any] = []
    try:
        state = await serve_state(
            StateSettings(
                port=0,
                database_url=backend.database_url,
                redis_url=backend.redis_url,
                redis_prefix=backend.redis_prefix,
                claim_poll_ms=50,
                **grace,
            )
        )
        services.append(state)
        dag_builder = await serve_dag_builder(DagBuilderSettings(port=0, **grace))
        services.append(dag_builder)
        addrs = {
            "state_addr": f"127.0.0.1:{state.port}",
            "dag_builder_addr": f"127.0.0.1:{dag_builder.port}",
        }
        common = {"lease_ms": 3000, "heartbeat_ms": 300, "claim_poll_ms": 50, **addrs, **grace}
        replica_a = await serve_executor(ExecutorSettings(port=0, **{**common, **a}))
        services.append(replica_a)
        replica_b = None
        if b is not None:
            replica_b = await serve_executor(ExecutorSettings(port=0, **{**common, **b}))
            services.append(replica_b)
        gateway = await serve_gateway(
            GatewaySettings(
                embedded=True,
                http_host="127.0.0.1",
                http_port=0,
                api_tokens="",
                executor_addr=f"127.0.0.1:{replica_a.port}",
                **addrs,
            )
        )
        services.append(gateway)
        yield f"http://127.0.0.1:{gateway.port}", replica_a, replica_b
    finally:
        for service in reversed(services):
            await service.stop()


def _run_span(spans: list[ReadableSpan], execution_id: str) -> ReadableSpan | None:
    """The ``execution`` span of one run of ``execution_id`` (None before it ended)."""
    runs = [
        s
        for s in spans
        if s.name.startswith("execution ") and _attr(s, "weft.execution.id") == execution_id
    ]
    assert len(runs) <= 1, [s.name for s in runs]
    return runs[0] if runs else None



def _workflow(upstream: HttpTestServer) -> dict[str, Any]:
    return {
        "id": "traced",
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "fetch",
                "type": "http",
                "config": {"method": "GET", "url": upstream.url("/echo")},
            },
            {"id": "total", "type": "transform", "config": {"expression": "fetch.status"}},
            {"id": "done", "type": "output", "config": {"value": "{{total}}"}},
        ],
        "edges": [
            {"source": "start", "target": "fetch"},
            {"source": "fetch", "target": "total"},
            {"source": "total", "target": "done"},
        ],
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_one_execution_is_one_trace_across_all_services(
    tel: TestTelemetry, stack: Stack, upstream: HttpTestServer
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        # The SSE form: the gateway follows the event stream (server streaming) in the same trace.
        async with client.stream(
            "POST",
            "/v1/executions",
            json={"workflow": _workflow(upstream), "input": {}},
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200
            body = "".join([chunk async for chunk in response.aiter_text()])
        assert "event: execution:completed" in body
        execution_id = body.split('"executionId":"', 1)[1].split('"', 1)[0]
        final = await _wait_status(client, execution_id, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final
    assert final["outputs"] == {"done": 200}

    def complete(spans: list[ReadableSpan]) -> bool:
        return any(
            s.name.startswith("execution ") and _attr(s, "weft.execution.id") == execution_id
            for s in spans
        )

    spans = await _settle(tel, complete)
    roots = [
        s
        for s in spans
        if s.kind is SpanKind.SERVER
        and _attr(s, "rpc.service") is None
        and (_attr(s, "http.target") or _attr(s, "url.path")) == "/v1/executions"
    ]
    assert len(roots) == 1, sorted({(s.name, s.kind.name) for s in spans})
    root = roots[0]
    trace_id = root.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    # One tree: the gateway's HTTP span, under this test's own HTTP client span (httpx is
    # instrumented in this process too), and every other span of the trace below it.
    [top] = [s for s in in_trace if s.parent is None]
    assert root is top or _ancestors(root, by_id) == [top]
    for s in in_trace:
        if s is not top and s is not root:
            assert root in _ancestors(s, by_id), (s.name, [a.name for a in _ancestors(s, by_id)])

    servers = {_attr(s, "rpc.service") for s in in_trace if s.kind is SpanKind.SERVER}
    assert {EXECUTOR, STATE, DAG_BUILDER} <= servers, servers
    methods = {s.name for s in in_trace if s.kind is SpanKind.SERVER and _attr(s, "rpc.service")}
    assert f"{EXECUTOR}/StartExecution" in methods
    assert f"{DAG_BUILDER}/CompileWorkflow" in methods
    assert f"{STATE}/CreateExecution" in methods
    assert f"{STATE}/CommitStream" in methods  # each commit message: a call of its own
    # The gateway followed the events over a server stream, inside the same trace.
    assert any("StreamEvents" in m or "StreamExecutionEvents" in m for m in methods), methods
    # The state service's SQL statements are spans under its RPC spans.
    sql = [s for s in in_trace if _attr(s, "db.system") in ("sqlite", "postgresql")]
    statements = [s for s in sql if _attr(s, "db.statement")]
    assert len(statements) >= 5, sorted({s.name for s in sql})
    # A pool checkout is no span of its own (the instrumentation's "connect", unwrapped).
    assert [s for s in in_trace if s.name == "connect"] == []
    # Nor a pool-usage metric update (two per checkout: most of the measurements otherwise).
    assert not [name for name, _ in tel.metric_points() if name.startswith("db.client")]
    commit_servers = [
        s for s in in_trace if s.name == f"{STATE}/CommitStream" and s.kind is SpanKind.SERVER
    ]
    assert any(any(a in commit_servers for a in _ancestors(s, by_id)) for s in statements), (
        "no statement under a CommitStream message"
    )
    assert all(any(_attr(a, "rpc.service") == STATE for a in _ancestors(s, by_id)) for s in sql)

    # The execution span and its node spans, each attempt under the execution.
    executions = [
        s
        for s in in_trace
        if _attr(s, "weft.execution.id") == execution_id and s.name.startswith("execution ")
    ]
    assert len(executions) == 1
    execution = executions[0]
    nodes = {_attr(s, "weft.node.id"): s for s in in_trace if _attr(s, "weft.node.id")}
    assert {"start", "fetch", "total", "done"} <= set(nodes)
    for node_id in ("start", "fetch", "total", "done"):
        node = nodes[node_id]
        assert node.parent is not None and node.parent.span_id == execution.context.span_id
        assert _attr(node, "weft.node.status") == "SUCCEEDED"
        assert _attr(node, "weft.node.attempt") == 1
    assert _attr(nodes["fetch"], "weft.node.type") == "http"

    # The upstream saw the same trace, with the node's HTTP client span as parent.
    [request] = [r for r in upstream.requests if r.path == "/echo"]
    headers = {k.lower(): v for k, v in request.headers.items()}
    _version, tid, parent_span, _flags = headers["traceparent"].split("-")
    assert int(tid, 16) == trace_id
    http_client = by_id[int(parent_span, 16)]
    assert http_client.kind is SpanKind.CLIENT
    assert http_client.parent is not None
    assert http_client.parent.span_id == nodes["fetch"].context.span_id


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_resumed_execution_links_to_its_first_trace(tel: TestTelemetry, stack: Stack) -> None:
    workflow = {
        "id": "approve_me",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "approve", "type": "approval", "config": {"reason": "ok?"}},
            {"id": "done", "type": "output", "config": {"value": "{{approve}}"}},
        ],
        "edges": [
            {"source": "start", "target": "approve"},
            {"source": "approve", "target": "done"},
        ],
    }
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        started = await client.post(
            "/v1/executions", json={"workflow": workflow, "input": {}},
            headers={"Accept": "application/json"},
        )  # fmt: skip
        assert started.status_code == 202, started.text
        execution_id = started.json()["executionId"]
        await _wait_status(client, execution_id, "PAUSED")
        resumed = await client.post(
            f"/v1/executions/{execution_id}/resume",
            json={"nodeId": "approve", "input": {"ok": True}},
        )
        assert resumed.status_code == 202, resumed.text
        final = await _wait_status(client, execution_id, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final

    def two_runs(spans: list[ReadableSpan]) -> bool:
        runs = [
            s
            for s in spans
            if s.name.startswith("execution ") and _attr(s, "weft.execution.id") == execution_id
        ]
        return len(runs) == 2

    spans = await _settle(tel, two_runs)
    runs = [
        s
        for s in spans
        if s.name.startswith("execution ") and _attr(s, "weft.execution.id") == execution_id
    ]
    assert len(runs) == 2, [s.name for s in runs]
    first, second = sorted(runs, key=lambda s: s.start_time or 0)
    assert not _attr(first, "weft.execution.resumed")
    assert _attr(second, "weft.execution.resumed") is True
    assert second.context.trace_id != first.context.trace_id
    assert [(link.context.trace_id, link.context.span_id) for link in second.links] == [
        (first.context.trace_id, first.context.span_id)
    ]
    # The approval node's completion is traced in the resumed run.
    approve = [s for s in spans if _attr(s, "weft.node.id") == "approve"]
    assert any(s.context.trace_id == second.context.trace_id for s in approve)


@pytest.mark.parametrize("registered", [False, True], ids=["inline", "registered"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_a_first_run_claimed_by_another_replica_continues_the_trace(
    tel: TestTelemetry, backend: Backend, monkeypatch: pytest.MonkeyPatch, registered: bool
) -> None:
    """Replica A takes the StartExecution call but has no room, so replica B claims the new
    execution: B's run continues the request's trace through the trace context stored with the
    execution (CreateExecution.trace_context, returned by LoadExecution). Inline definitions and
    registered workflows (PostgreSQL creates those with a statement of its own)."""
    import weft_executor.servicer

    # Both replicas live in this process: keep A's in-process memory of the caller's context
    # (what spares the common case a lookup) from reaching B, as it could not across processes.
    monkeypatch.setattr(weft_executor.servicer, "remember_start_context", lambda _id: None)
    async with _replica_stack(
        backend, a={"max_executions_per_worker": 0}, b={}
    ) as (gateway_url, replica_a, _):
        workflow = {
            "id": "elsewhere",
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "double", "type": "transform", "config": {"expression": "21 * 2"}},
                {"id": "done", "type": "output", "config": {"value": "{{double}}"}},
            ],
            "edges": [
                {"source": "start", "target": "double"},
                {"source": "double", "target": "done"},
            ],
        }
        async with httpx.AsyncClient(
            base_url=gateway_url, timeout=30
        ) as client:
            if registered:
                created = await client.post("/v1/workflows", json=workflow)
                assert created.status_code == 201, created.text
                started = await client.post(
                    f"/v1/workflows/{workflow['id']}/execute",
                    json={"input": {}},
                    headers={"Accept": "application/json"},
                )
            else:
                started = await client.post(
                    "/v1/executions",
                    json={"workflow": workflow, "input": {}},
                    headers={"Accept": "application/json"},
                )
            assert started.status_code == 202, started.text
            execution_id = started.json()["executionId"]
            final = await _wait_status(client, execution_id, "SUCCEEDED", "FAILED")
        assert final["status"] == "SUCCEEDED", final
        assert final["outputs"] == {"done": 42}
        assert replica_a.worker.running_count == 0  # A never had room: B ran it

    def ran(spans: list[ReadableSpan]) -> bool:
        return any(
            s.name.startswith("execution ") and _attr(s, "weft.execution.id") == execution_id
            for s in spans
        )

    spans = await _settle(tel, ran)
    [run] = [
        s
        for s in spans
        if s.name.startswith("execution ") and _attr(s, "weft.execution.id") == execution_id
    ]
    [start_server] = [
        s
        for s in spans
        if s.name == f"{EXECUTOR}/StartExecution"
        and s.kind is SpanKind.SERVER
        and s.context.trace_id == run.context.trace_id
    ]
    # One trace id end to end: the gateway's request, A's StartExecution, B's run and its nodes.
    assert run.parent is not None and run.parent.span_id == start_server.context.span_id
    assert run.parent.is_remote  # continued from the stored context, not from memory
    in_trace = [s for s in spans if s.context.trace_id == run.context.trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    [http_root] = [
        s
        for s in in_trace
        if s.kind is SpanKind.SERVER
        and _attr(s, "rpc.service") is None
        and str(_attr(s, "http.target") or _attr(s, "url.path") or "").startswith(
            ("/v1/executions", "/v1/workflows/")
        )
    ]
    assert http_root in _ancestors(start_server, by_id)
    nodes = {_attr(s, "weft.node.id"): s for s in in_trace if _attr(s, "weft.node.id")}
    assert {"start", "double", "done"} <= set(nodes)
    for node in nodes.values():
        assert node.parent is not None and node.parent.span_id == run.context.span_id
    commits = [
        s for s in in_trace if s.name == f"{STATE}/CommitStream" and s.kind is SpanKind.CLIENT
    ]
    assert commits and all(run in _ancestors(s, by_id) for s in commits)
    # Each commit message's SERVER span continues its CLIENT span (the context the message
    # carries: the stream's metadata went once, in another trace's context or none).
    commit_ids = {s.context.span_id for s in commits}
    commit_servers = [
        s for s in in_trace if s.name == f"{STATE}/CommitStream" and s.kind is SpanKind.SERVER
    ]
    assert commit_servers and all(
        s.parent is not None and s.parent.span_id in commit_ids for s in commit_servers
    )


@pytest.mark.parametrize("where", ["same_replica", "other_replica"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_child_execution_continues_the_parents_trace(
    tel: TestTelemetry, backend: Backend, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """``other_replica``: replica A has room for one execution (the parent, which it takes at
    once from StartExecution) and does not claim, so the child it creates is left to replica B's
    claim loop; the trace can only reach B through the stored trace context. ``same_replica``:
    A claims the child at once (its own reservation)."""
    from weft_executor.worker import Worker

    suffix = uuid.uuid4().hex[:8]
    id_a, id_b = f"replica-a-{suffix}", f"replica-b-{suffix}"
    ran_on: dict[str, str] = {}  # execution id -> worker id that ran it
    run_leased = Worker.run_leased
    claim_once = Worker._claim_once

    def spy(self: Worker, lease: Any, **kw: Any) -> None:
        ran_on.setdefault(lease.execution_id, self.worker_id)
        run_leased(self, lease, **kw)

    async def claim_unless_a(self: Worker, *, wait_ms: int) -> None:
        # A's long poll (opened while it had room) could otherwise take the child: the worker's
        # bound is soft by design (see Worker._claim_once).
        if where == "other_replica" and self.worker_id == id_a:
            await asyncio.sleep(wait_ms / 1000)
            return
        await claim_once(self, wait_ms=wait_ms)

    monkeypatch.setattr(Worker, "run_leased", spy)
    monkeypatch.setattr(Worker, "_claim_once", claim_unless_a)
    child_wf, parent_wf = f"traced_child_{suffix}", f"traced_parent_{suffix}"
    room = {"max_executions_per_worker": 1} if where == "other_replica" else {}
    async with _replica_stack(
        backend,
        a={"worker_id": id_a, **room},
        b={"worker_id": id_b} if where == "other_replica" else None,
    ) as (gateway_url, _, _):
        child = {
            "id": child_wf,
            "nodes": [
                {"id": "start", "type": "start"},
                {"id": "double", "type": "transform", "config": {"expression": "input.x * 2"}},
                {
                    "id": "out",
                    "type": "output",
                    "config": {"name": "doubled", "value": "{{double}}"},
                },
            ],
            "edges": [
                {"source": "start", "target": "double"},
                {"source": "double", "target": "out"},
            ],
        }
        parent = {
            "id": parent_wf,
            "nodes": [
                {"id": "start", "type": "start"},
                {
                    "id": "sub",
                    "type": "subworkflow",
                    "config": {"workflowId": child_wf, "input": {"x": 21}},
                },
                {"id": "done", "type": "output", "config": {"value": "{{sub.doubled}}"}},
            ],
            "edges": [{"source": "start", "target": "sub"}, {"source": "sub", "target": "done"}],
        }
        async with httpx.AsyncClient(
            base_url=gateway_url, timeout=30
        ) as client:
            created = await client.post("/v1/workflows", json=child)
            assert created.status_code == 201, created.text
            started = await client.post(
                "/v1/executions",
                json={"workflow": parent, "input": {}},
                headers={"Accept": "application/json"},
            )
            assert started.status_code == 202, started.text
            parent_id = started.json()["executionId"]
            final = await _wait_status(client, parent_id, "SUCCEEDED", "FAILED", "CANCELLED")
            assert final["status"] == "SUCCEEDED", final
            assert final["outputs"] == {"done": 42}
            listed = await client.get("/v1/executions", params={"workflowId": child_wf})
            assert listed.status_code == 200, listed.text
            [child_id] = [e["executionId"] for e in listed.json()]

    assert ran_on[parent_id] == id_a
    assert ran_on[child_id] == (id_b if where == "other_replica" else id_a), (where, ran_on)

    spans = await _settle(
        tel, lambda spans: all(_run_span(spans, e) for e in (parent_id, child_id))
    )
    parent_run, child_run = _run_span(spans, parent_id), _run_span(spans, child_id)
    assert parent_run is not None and child_run is not None
    [sub] = [
        s
        for s in spans
        if _attr(s, "weft.node.id") == "sub" and _attr(s, "weft.execution.id") == parent_id
    ]
    assert sub.parent is not None and sub.parent.span_id == parent_run.context.span_id
    # One trace: the child's run is a child of the parent's subworkflow node attempt span,
    # continued from the context stored with the child (a remote parent), not a new trace.
    assert child_run.context.trace_id == parent_run.context.trace_id
    assert child_run.parent is not None
    assert child_run.parent.span_id == sub.context.span_id
    assert child_run.parent.is_remote
    assert not _attr(child_run, "weft.execution.resumed")
    child_nodes = [
        s for s in spans if _attr(s, "weft.execution.id") == child_id and s is not child_run
    ]
    assert {_attr(s, "weft.node.id") for s in child_nodes} >= {"start", "double", "out"}
    for node in child_nodes:
        assert node.context.trace_id == parent_run.context.trace_id
        assert node.parent is not None and node.parent.span_id == child_run.context.span_id
    # The state service's CreateExecution for the child was made inside the node attempt too.
    creates = [
        s
        for s in spans
        if s.name.endswith("StateService/CreateExecution")
        and s.kind is SpanKind.CLIENT
        and s.context.trace_id == parent_run.context.trace_id
    ]
    assert any(s.parent is not None and s.parent.span_id == sub.context.span_id for s in creates)
