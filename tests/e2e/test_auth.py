"""Bearer tokens on the real stack: each token sees and runs only what it created."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from weft_cli.stack import start_stack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
A = {"Authorization": "Bearer token-of-alice"}
B = {"Authorization": "Bearer token-of-bob"}


@pytest.mark.timeout(180)
async def test_tokens_isolate_owners(tmp_path: Path) -> None:
    stack = await start_stack(http_port=0, data_dir=tmp_path,
                              api_tokens="alice:token-of-alice,bob:token-of-bob")
    wf = json.loads((EXAMPLES / "demo.json").read_text())
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
            assert (await c.get("/v1/workflows")).status_code == 401
            assert (await c.post("/v1/workflows", json=wf, headers=A)).status_code == 201
            assert (await c.get(f"/v1/workflows/{wf['id']}", headers=B)).status_code == 404
            assert (await c.post(f"/v1/workflows/{wf['id']}/execute", json={"input": {}}, headers=B)).status_code == 404
            taken = await c.post("/v1/workflows", json=wf, headers=B)
            assert taken.status_code == 409, taken.text  # the id belongs to another owner
            eid = (await c.post(f"/v1/workflows/{wf['id']}/execute", json={"input": {}}, headers=A)).json()["executionId"]
            for path in (f"/v1/executions/{eid}", f"/v1/executions/{eid}/nodes", f"/v1/executions/{eid}/stream"):
                assert (await c.get(path, headers=B)).status_code == 404, path
            assert (await c.post(f"/v1/executions/{eid}/cancel", headers=B)).status_code == 404
            assert (await c.get("/v1/executions", headers=B)).json() == []
            async with c.stream("GET", f"/v1/executions/{eid}/stream", headers=A) as resp:
                types = [line[7:] async for line in resp.aiter_lines() if line.startswith("event: ")]
            assert types[-1] == "execution:completed"
            assert [e["executionId"] for e in (await c.get("/v1/executions", headers=A)).json()] == [eid]
    finally:
        await stack.stop()
