"""A sub-workflow's child execution is part of its parent's trace: the child is created with the
``traceparent`` of the parent's ``subworkflow`` node attempt (CreateExecutionRequest.trace_context),
so the child's run span is a child of that node span, in the parent's trace, whether the replica
that runs the parent claims the child at once or another replica's claim loop picks it up.

The services run in this process with the in-memory test exporter (as in ``test_tracing.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
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


@pytest.fixture
def tel() -> Iterator[TestTelemetry]:
    t = telemetry_for_tests()  # before the services start: their channels pick interceptors then
    yield t
    t.stop()


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


def _attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {}).get(key)


def _run_span(spans: list[ReadableSpan], execution_id: str) -> ReadableSpan | None:
    runs = [
        s
        for s in spans
        if s.name.startswith("execution ") and _attr(s, "weft.execution.id") == execution_id
    ]
    assert len(runs) <= 1, [s.name for s in runs]
    return runs[0] if runs else None


async def _settle(tel: TestTelemetry, execution_ids: list[str]) -> list[ReadableSpan]:
    """The run spans end a little after the status the test saw: wait for all of them."""
    spans: list[ReadableSpan] = []
    for _ in range(100):
        spans = tel.spans()
        if all(_run_span(spans, e) is not None for e in execution_ids):
            return spans
        await asyncio.sleep(0.05)
    return spans


async def _wait_status(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(300):
        body = (await client.get(f"/v1/executions/{execution_id}")).json()
        if body.get("status") in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"execution {execution_id} never ended: {body}")


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
    grace = {"grpc_shutdown_grace_s": 0.5}
    services: list[Any] = []
    child_wf, parent_wf = f"traced_child_{suffix}", f"traced_parent_{suffix}"
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
        room = {"max_executions_per_worker": 1} if where == "other_replica" else {}
        replica_a = await serve_executor(ExecutorSettings(port=0, worker_id=id_a, **room, **common))
        services.append(replica_a)
        if where == "other_replica":
            replica_b = await serve_executor(ExecutorSettings(port=0, worker_id=id_b, **common))
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
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=30
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
            final = await _wait_status(client, parent_id)
            assert final["status"] == "SUCCEEDED", final
            assert final["outputs"] == {"done": 42}
            listed = await client.get("/v1/executions", params={"workflowId": child_wf})
            assert listed.status_code == 200, listed.text
            [child_id] = [e["executionId"] for e in listed.json()]
    finally:
        for service in reversed(services):
            await service.stop()

    assert ran_on[parent_id] == id_a
    assert ran_on[child_id] == (id_b if where == "other_replica" else id_a), (where, ran_on)

    spans = await _settle(tel, [parent_id, child_id])
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
