"""The HTTP API of SPEC section 6 over real HTTP: routes, status codes, problem+json bodies."""

from __future__ import annotations

import re

import httpx

from .fakes import FakeStack, wait_until
from .workflows import APPROVAL, FAILING, INVALID, linear

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def assert_problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status
    assert body["detail"]
    assert body["title"]
    assert body["type"]
    return body


async def wait_status(client: httpx.AsyncClient, eid: str, *wanted: str) -> dict:
    for _ in range(500):
        body = (await client.get(f"/v1/executions/{eid}")).json()
        if body["status"] in wanted:
            return body
        await __import__("asyncio").sleep(0.01)
    raise AssertionError(f"status stayed {body['status']}, wanted {wanted}")


async def test_health_ready_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["services"]) == {"dagBuilder", "executor", "state"}
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/workflows", "/v1/workflows/{id}", "/v1/workflows/validate",
                 "/v1/workflows/{id}/execute", "/v1/executions", "/v1/executions/{id}",
                 "/v1/executions/{id}/stream", "/v1/executions/{id}/nodes",
                 "/v1/executions/{id}/resume", "/v1/executions/{id}/cancel"):
        assert path in doc["paths"], path


async def test_readyz_is_503_when_an_upstream_is_down(client: httpx.AsyncClient, fakes: FakeStack) -> None:
    await fakes.servers["executor_addr"].stop(0)
    body = assert_problem(await client.get("/readyz"), 503)
    assert body["services"]["executor"] != "SERVING"
    assert body["services"]["state"] == "SERVING"


async def test_validate_reports_diagnostics(client: httpx.AsyncClient) -> None:
    ok = await client.post("/v1/workflows/validate", json=linear())
    assert ok.status_code == 200
    assert ok.json() == {"valid": True, "diagnostics": []}
    bad = await client.post("/v1/workflows/validate", json=INVALID)
    assert bad.status_code == 200
    body = bad.json()
    assert body["valid"] is False
    assert {d.get("nodeId") for d in body["diagnostics"]} >= {"b", "ghost"}
    assert any(d.get("edgeId") == "e1" for d in body["diagnostics"])
    assert all({"code", "message"} <= set(d) for d in body["diagnostics"])


async def test_register_get_and_versions(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/workflows", json=linear("orders"))
    assert first.status_code == 201
    assert first.json() == {"id": "orders", "version": 1}
    second = await client.post("/v1/workflows", json={**linear("orders"), "name": "Orders v2"})
    assert second.json() == {"id": "orders", "version": 2}
    latest = await client.get("/v1/workflows/orders")
    assert latest.status_code == 200
    assert latest.json()["name"] == "Orders v2"
    assert latest.headers["weft-workflow-version"] == "2"
    v1 = await client.get("/v1/workflows/orders", params={"version": 1})
    assert "name" not in v1.json()
    assert v1.json()["nodes"][2]["config"] == {"value": 42}  # integral numbers stay integers
    listed = (await client.get("/v1/workflows")).json()
    assert [(w["id"], w["version"]) for w in listed] == [("orders", 2)]
    assert_problem(await client.get("/v1/workflows/nope"), 404)
    assert_problem(await client.get("/v1/workflows/orders", params={"version": "x"}), 400)


async def test_register_invalid_is_422_with_diagnostics(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/v1/workflows", json=INVALID), 422)
    assert {d.get("nodeId") for d in body["diagnostics"]} >= {"b", "ghost"}
    malformed = assert_problem(await client.post("/v1/workflows", json={"id": "x", "nodes": 3}), 422)
    assert malformed["diagnostics"][0]["code"] == "MALFORMED"
    assert_problem(await client.post("/v1/workflows", content=b"{not json"), 400)


async def test_run_definition_and_read_execution(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/executions", json={"workflow": linear(), "input": {"n": 1}})
    assert resp.status_code == 202
    eid = resp.json()["executionId"]
    assert resp.headers["weft-execution-id"] == eid
    body = await wait_status(client, eid, "SUCCEEDED")
    assert body["executionId"] == eid
    assert body["workflowId"] == "linear"
    assert body["outputs"] == {"out": 42}
    assert body["error"] is None
    assert body["pausedNodes"] == []
    assert body["input"] == {"n": 1}
    assert RFC3339_MS.match(body["startedAt"]) and RFC3339_MS.match(body["finishedAt"])
    nodes = (await client.get(f"/v1/executions/{eid}/nodes")).json()
    assert [n["nodeId"] for n in nodes] == ["start", "work", "out"]
    work = nodes[1]
    assert work["status"] == "SUCCEEDED"
    assert work["attempt"] == 1
    assert work["output"] == 2
    assert work["durationMs"] > 0
    assert RFC3339_MS.match(work["startedAt"]) and RFC3339_MS.match(work["finishedAt"])
    assert set(work) >= {"nodeId", "scope", "status", "attempt", "input", "output", "error",
                         "startedAt", "finishedAt", "durationMs"}


async def test_execute_registered_workflow_with_idempotency(client: httpx.AsyncClient) -> None:
    await client.post("/v1/workflows", json=linear("reg"))
    a = await client.post("/v1/workflows/reg/execute", json={"input": {}, "idempotencyKey": "k1"})
    b = await client.post("/v1/workflows/reg/execute", json={"input": {}, "idempotencyKey": "k1"})
    assert a.status_code == b.status_code == 202
    assert a.json()["executionId"] == b.json()["executionId"]
    assert b.json()["existing"] is True
    assert_problem(await client.post("/v1/workflows/missing/execute", json={"input": {}}), 404)


async def test_failed_execution_names_the_node(client: httpx.AsyncClient) -> None:
    eid = (await client.post("/v1/executions", json={"workflow": FAILING, "input": {}})).json()["executionId"]
    body = await wait_status(client, eid, "FAILED")
    assert body["error"] == {"message": "no luck", "code": "NOPE", "nodeId": "boom"}


async def test_execute_invalid_is_422(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/v1/executions", json={"workflow": INVALID, "input": {}}), 422)
    assert body["type"].endswith("invalid-workflow")
    assert {d.get("nodeId") for d in body["diagnostics"]} >= {"b"}
    assert_problem(await client.post("/v1/executions", json={"input": {}}), 400)
    assert_problem(await client.post("/v1/executions", json=[1, 2]), 400)


async def test_unknown_things_are_404_problems(client: httpx.AsyncClient) -> None:
    for path in ("/v1/executions/nope", "/v1/executions/nope/nodes", "/v1/executions/nope/stream",
                 "/v1/nothing-here"):
        assert_problem(await client.get(path), 404)
    assert_problem(await client.post("/v1/executions/nope/cancel"), 404)
    assert_problem(await client.delete("/v1/executions"), 405)


async def test_resume_status_codes(client: httpx.AsyncClient) -> None:
    eid = (await client.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
    paused = await wait_status(client, eid, "PAUSED")
    assert paused["pausedNodes"] == [{
        "nodeId": "approve", "scope": [], "reason": "ok to ship?",
        "inputSchema": {"type": "object", "required": ["approved"]}}]
    bad = assert_problem(await client.post(f"/v1/executions/{eid}/resume",
                                           json={"nodeId": "approve", "input": {"nope": 1}}), 422)
    assert "approved" in bad["detail"]
    assert_problem(await client.post(f"/v1/executions/{eid}/resume", json={"input": {}}), 422)
    assert_problem(await client.post(f"/v1/executions/{eid}/resume",
                                     json={"nodeId": "out", "input": {"approved": True}}), 409)
    ok = await client.post(f"/v1/executions/{eid}/resume", json={"nodeId": "approve", "input": {"approved": True}})
    assert ok.status_code == 202
    again = await client.post(f"/v1/executions/{eid}/resume", json={"nodeId": "approve", "input": {"approved": True}})
    assert_problem(again, 409)
    done = await wait_status(client, eid, "SUCCEEDED")
    assert done["outputs"] == {"out": "shipped"}
    assert_problem(await client.post("/v1/executions/nope/resume", json={"nodeId": "a", "input": {}}), 404)


async def test_cancel_is_202(client: httpx.AsyncClient, fakes: FakeStack) -> None:
    eid = (await client.post("/v1/executions", json={"workflow": APPROVAL, "input": {}})).json()["executionId"]
    await wait_status(client, eid, "PAUSED")
    resp = await client.post(f"/v1/executions/{eid}/cancel", json={})
    assert resp.status_code == 202
    assert (await wait_status(client, eid, "CANCELLED"))["status"] == "CANCELLED"
    await wait_until(lambda: fakes.world.executions[eid].events[-1].type == "execution:cancelled")


async def test_list_executions(client: httpx.AsyncClient) -> None:
    eid = (await client.post("/v1/executions", json={"workflow": linear("listed"), "input": {}})).json()["executionId"]
    listed = (await client.get("/v1/executions", params={"workflowId": "listed"})).json()
    assert [e["executionId"] for e in listed] == [eid]


async def test_oversized_body_is_413(fakes: FakeStack) -> None:
    from weft_stream_gateway.server import serve

    from .conftest import gateway_settings

    running = await serve(gateway_settings(fakes, http_max_body_bytes=1000))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as c:
            big = {"workflow": linear(), "input": {"blob": "x" * 2000}}
            assert_problem(await c.post("/v1/executions", json=big), 413)

            async def chunked():  # no Content-Length: counted while reading
                yield b'{"workflow": '
                yield b'"' + b"y" * 2000 + b'"}'

            assert_problem(await c.post("/v1/executions", content=chunked()), 413)
            assert (await c.post("/v1/executions", json={"workflow": linear(), "input": {}})).status_code == 202
    finally:
        await running.stop()
