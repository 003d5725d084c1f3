"""The `weft` CLI against the real stack: progress and outputs, exit codes, resume, logs, status,
workflows, and the embedded stack it starts when no gateway answers."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import httpx
import pytest

from weft_cli import session
from weft_cli.api import ApiClient
from weft_cli.stack import EmbeddedStack

REPO = Path(__file__).resolve().parents[2]
WEFT = Path(sys.executable).parent / "weft"
pytestmark = pytest.mark.timeout(300)

FAILING = {"id": "cli_fail", "nodes": [
    {"id": "start", "type": "start"},
    {"id": "boom", "type": "fail", "config": {"message": "no luck", "code": "NOPE"}}],
    "edges": [{"source": "start", "target": "boom"}]}
INVALID = {"id": "cli_invalid", "nodes": [
    {"id": "start", "type": "start"}, {"id": "a", "type": "transform", "config": {"expression": "b"}},
    {"id": "b", "type": "transform", "config": {"expression": "a"}}],
    "edges": [{"source": "start", "target": "a"}, {"source": "a", "target": "b"}, {"source": "b", "target": "a"}]}


async def weft(*args: str, within: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(WEFT), *args, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), within)
    return int(proc.returncode or 0), out.decode(), err.decode()


def write(tmp_path: Path, name: str, value: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return str(path)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def test_run_shows_progress_and_prints_outputs(stack: EmbeddedStack) -> None:
    code, out, err = await weft("run", "examples/demo.json", "--url", stack.url)
    assert code == 0, err
    outputs = json.loads(out)
    assert outputs["invoice"] == {"subtotal": 120.5, "total": 108.45, "discount": True}
    assert outputs["summary"] == "ada pays 108.45 for 3 lines (discount applied)"
    assert [r["sku"] for r in outputs["reservations"]] == ["tea", "cups", "teapot"]
    # Not a terminal: one plain line per event, then a summary with timings.
    assert "node:started line_total[each_line#2] transform" in err
    assert "node:completed each_line" in err and " ms" in err
    assert "node:skipped full_price" in err
    assert "SUCCEEDED in" in err and "slowest:" in err


async def test_run_input_flags_and_json_output(stack: EmbeddedStack, tmp_path: Path) -> None:
    order = write(tmp_path, "order.json", {"customer": "bo", "lines": [{"sku": "mug", "qty": 2, "unit": 5}]})
    code, out, err = await weft("run", "examples/demo.json", "--url", stack.url, "--input", f"@{order}", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "SUCCEEDED"
    assert result["outputs"]["invoice"] == {"subtotal": 10, "total": 10, "discount": False}
    assert err == ""  # --json: machine output only
    code, out, err = await weft("run", "examples/demo.json", "--url", stack.url, "--json",
                                "--input", "customer=cy", "--input", 'lines=[{"sku":"x","qty":1,"unit":200}]')
    assert code == 0, err
    assert json.loads(out)["outputs"]["summary"] == "cy pays 180 for 1 lines (discount applied)"


async def test_exit_codes(stack: EmbeddedStack, tmp_path: Path) -> None:
    code, out, err = await weft("run", write(tmp_path, "f.json", FAILING), "--url", stack.url, "--json")
    assert code == 1, err
    assert json.loads(out)["error"] == {"message": "no luck", "code": "NOPE", "nodeId": "boom"}
    code, out, err = await weft("run", write(tmp_path, "i.json", INVALID), "--url", stack.url)
    assert code == 2
    assert "CYCLE" in err and "node a" in err
    code, out, _ = await weft("validate", write(tmp_path, "i2.json", INVALID), "--url", stack.url)
    assert code == 2 and "CYCLE (node a)" in out
    assert (await weft("validate", "examples/demo.json", "--url", stack.url))[0] == 0
    assert (await weft("run", str(tmp_path / "missing.json"), "--url", stack.url))[0] == 3
    assert (await weft("run", "examples/demo.json", "--url", stack.url, "--input", "novalue"))[0] == 3
    code, _, err = await weft("status", "nope", "--url", stack.url)
    assert code == 3 and "not found" in err.lower()
    code, _, err = await weft("status", "x", "--url", closed_port_url())
    assert code == 3 and "cannot reach" in err
    assert (await weft("frobnicate"))[0] == 3


async def test_pause_resume_status_logs(stack: EmbeddedStack, api: httpx.AsyncClient) -> None:
    run = asyncio.create_task(weft("run", "examples/approval.json", "--url", stack.url,
                                   "--input", "@examples/inputs/expense.json"))
    eid = None
    for _ in range(600):
        listed = (await api.get("/v1/executions", params={"workflowId": "expense_approval"})).json()
        paused = [e for e in listed if e["status"] == "PAUSED"]
        if paused:
            eid = paused[0]["executionId"]
            break
        await asyncio.sleep(0.1)
    assert eid, "the run never paused"
    code, out, _ = await weft("status", eid, "--url", stack.url)
    assert code == 0
    assert "PAUSED" in out and "paused at manager: kim asks for 240: approve?" in out
    code, _, err = await weft("resume", eid, "manager", "--url", stack.url, "--input", "approved=yes")
    assert code == 3 and "422" in err  # approved must be a boolean, by is required
    code, _, err = await weft("resume", eid, "manager", "--url", stack.url,
                              "--input", "approved=true", "--input", "by=sam")
    assert code == 0, err
    code, out, err = await run
    assert code == 0, err
    assert json.loads(out) == {"result": "paid 240 to kim (approved by sam)"}
    assert "execution:paused" in err and "execution:resumed" in err
    code, out, _ = await weft("logs", eid, "--url", stack.url)
    lines = out.strip().splitlines()
    last_seq = (await api.get(f"/v1/executions/{eid}")).json()["lastSeq"]
    assert len(lines) == last_seq
    assert "execution:started" in lines[0] and "execution:completed" in lines[-1]
    code, out, _ = await weft("status", eid, "--url", stack.url, "--json")
    body = json.loads(out)
    assert body["status"] == "SUCCEEDED"
    assert {n["nodeId"] for n in body["nodes"]} >= {"start", "triage", "manager", "decision", "paid"}


async def test_workflows_and_cancel(stack: EmbeddedStack, api: httpx.AsyncClient) -> None:
    code, out, err = await weft("workflows", "register", "examples/approval.json", "--url", stack.url)
    assert code == 0, err
    assert out.startswith("registered expense_approval version ")
    code, out, _ = await weft("workflows", "list", "--url", stack.url, "--json")
    assert "expense_approval" in [w["id"] for w in json.loads(out)]
    started = await api.post("/v1/workflows/expense_approval/execute", json={"input": {"employee": "x", "amount": 999}})
    eid = started.json()["executionId"]
    for _ in range(300):
        if (await api.get(f"/v1/executions/{eid}")).json()["status"] == "PAUSED":
            break
        await asyncio.sleep(0.1)
    code, _, err = await weft("cancel", eid, "--url", stack.url)
    assert code == 0, err
    for _ in range(300):
        if (await api.get(f"/v1/executions/{eid}")).json()["status"] == "CANCELLED":
            break
        await asyncio.sleep(0.1)
    assert (await api.get(f"/v1/executions/{eid}")).json()["status"] == "CANCELLED"


async def test_embedded_fallback_when_nothing_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "DEFAULT_URL", closed_port_url())
    monkeypatch.delenv("WEFT_URL", raising=False)
    target = session.Target(url=None, token=None, data_dir=str(tmp_path / "data"), quiet=True)
    async with session.connect(target) as (client, stack):
        assert isinstance(client, ApiClient)
        assert stack is not None and client.base_url == stack.url
        assert await client.alive()
    assert (tmp_path / "data" / "weft.db").exists()
    # With an explicit --url nothing is started: the command fails instead.
    explicit = session.Target(url=closed_port_url(), token=None, data_dir=str(tmp_path / "other"))
    async with session.connect(explicit) as (client, stack):
        assert stack is None
        assert not await client.alive()
