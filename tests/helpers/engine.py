"""Run workflows in memory through the real engine: compile JSON, run, check the event log.

``run_json(workflow, input)`` compiles a SPEC JSON workflow with the dag-builder and runs it with
``weft_executor.Engine`` into a ``RecordingStore``. ``play_case(case, fake_url)`` plays an
acceptance case (``../shared/acceptance/cases``) the way ``run.py`` does through the gateway:
same steps (pause/resume/cancel/sleep), same expectations and the same event-log invariants
(``check_event_log``/``check_events`` are imported from ``run.py`` itself).

Test doubles and builders: ``Script`` stands in for the ``wait`` handler on the node ids a test
scripts (sleep, fail, flake, ...) and counts calls, concurrency and cancellations; other ``wait``
nodes keep the real handler. ``wf``/``W``/``T``/``O``/``L``/``P`` build SPEC JSON workflows that the
real dag-builder compiles; ``trace`` turns an event list into readable lines.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import weft_executor.handlers  # noqa: F401 - registers the built-in handlers
from weft_common.compiled import CompiledDag
from weft_common.workflow import definition_from_json
from weft_dag_builder import compile_workflow
from weft_executor import Engine, Outcome, Resume, RunHandle
from weft_executor.handlers.base import HANDLERS, NodeContext, NodeFailure, NodeResult
from weft_executor.memory_store import RecordingStore
from weft_executor.records import NodeLogRecord, scope_json, scope_key
from weft_executor.settings import ExecutorSettings

# shared/ lies beside the repository (CI clones it elsewhere with a copy of shared/ beside it).
ACCEPTANCE = Path(__file__).resolve().parents[3] / "shared" / "acceptance"
CASES = ACCEPTANCE / "cases"

# What run.py --start puts in the stack's environment.
ACCEPTANCE_ENV = {
    "WEFT_PUBLIC_GREETING": "hi there",
    "WEFT_SECRET_TOKEN": "s3cr3t-value-123",
}


def acceptance_runner() -> ModuleType:
    """``../shared/acceptance/run.py`` as a module (its Fake server and its checks)."""
    name = "weft_acceptance_run"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, ACCEPTANCE / "run.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return mod


@contextmanager
def fake_upstream() -> Iterator[str]:
    """run.py's fake upstream (echo, delay, flaky, chat) on loopback; yields its base URL."""
    runner = acceptance_runner()
    runner.Fake.flaky_counts.clear()
    runner.Fake.idempotency_keys.clear()
    srv, url = runner.start_fake()
    try:
        yield url
    finally:
        srv.shutdown()
        srv.server_close()


def settings(**overrides: Any) -> ExecutorSettings:
    base: dict[str, Any] = {"env_allow": "WEFT_PUBLIC_", "http_allow_private": True}
    base.update(overrides)
    return ExecutorSettings(**base)


def compile_json(workflow: Mapping[str, Any]) -> CompiledDag:
    return compile_workflow(definition_from_json(dict(workflow)))


def event_triples(store: RecordingStore) -> list[tuple[str, str, dict[str, Any]]]:
    """Events as run.py reads them from SSE: (id, event, data)."""
    out = []
    for e in store.events:
        data = json.loads(json.dumps(e.to_json(store.execution_id), default=str))
        out.append((str(e.seq), e.draft.type, data))
    return out


def node_log_json(rec: NodeLogRecord) -> dict[str, Any]:
    """A node log as ``GET /v1/executions/{id}/nodes`` shows it (times as epoch floats)."""
    out: dict[str, Any] = {
        "nodeId": rec.node_id, "scope": scope_json(rec.scope), "status": rec.status.value,
        "attempt": rec.attempt, "input": rec.input, "output": rec.output, "error": rec.error,
        "startedAt": rec.started_at, "finishedAt": rec.finished_at,
    }
    if rec.finished_at is not None:
        out["durationMs"] = round((rec.finished_at - rec.started_at) * 1000, 3)
    if rec.token_usage is not None:
        out["tokenUsage"] = rec.token_usage
    return out


@dataclass
class Run:
    """One execution in memory: its DAG, store, latest handle and outcome."""

    dag: CompiledDag
    workflow: Mapping[str, Any]
    input: Any
    store: RecordingStore
    engine: Engine
    handle: RunHandle
    outcome: Outcome | None = None
    handles: list[RunHandle] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [d for _, _, d in event_triples(self.store)]

    @property
    def types(self) -> list[str]:
        return [e.draft.type for e in self.store.events]

    def node_events(self, node_id: str) -> list[str]:
        return [e.draft.type for e in self.store.events if e.draft.node_id == node_id]

    async def wait(self, within: float = 30) -> Outcome:
        self.outcome = await asyncio.wait_for(self.handle.result(), within)
        return self.outcome

    def check_log(self) -> None:
        """run.py's invariants: contiguous seq, started first, terminal last, every
        node:started ended exactly once, scopes as deep as the node's containers."""
        acceptance_runner().check_event_log(event_triples(self.store), self.workflow)

    def continue_with(
        self, *, resumes: list[Resume] = (), cancel: bool = False, engine: Engine | None = None
    ) -> RunHandle:
        """What a worker does after a pause (or a crash): a new engine run from the store."""
        engine = engine or self.engine
        handle = engine.start(
            execution_id=self.store.execution_id, dag=self.dag, input=self.input,
            store=self.store, variables=self.store.control.variables,
            steps=list(self.store.steps.values()), resumes=list(resumes), emit_started=False,
            open_runs=self.store.open_runs(),
        )
        if cancel:
            handle.cancel("cancelled by the test")
        self.handle = handle
        self.handles.append(handle)
        return handle


def start_json(
    workflow: Mapping[str, Any],
    input: Any = None,
    *,
    engine: Engine | None = None,
    execution_id: str = "ex-1",
    store: RecordingStore | None = None,
    dag: CompiledDag | None = None,
    **settings_overrides: Any,
) -> Run:
    dag = dag or compile_json(workflow)
    engine = engine or Engine(settings(**settings_overrides), environ=ACCEPTANCE_ENV)
    store = store or RecordingStore(execution_id=execution_id)
    handle = engine.start(execution_id=execution_id, dag=dag, input=input, store=store)
    return Run(dag=dag, workflow=workflow, input=input, store=store, engine=engine, handle=handle,
               handles=[handle])


async def run_json(workflow: Mapping[str, Any], input: Any = None, **kw: Any) -> Run:
    """Compile and run to the end (or the pause); check run.py's invariants when it ended."""
    run = start_json(workflow, input, **kw)
    await run.wait()
    if run.outcome is not None and run.outcome.status != "PAUSED":
        run.check_log()
    return run


def load_case(name: str, fake_url: str) -> dict[str, Any]:
    path = next(CASES.glob(f"{name}*.json"))
    case: dict[str, Any] = json.loads(path.read_text().replace("${FAKE}", fake_url))
    return case


async def play_case(case: Mapping[str, Any], fake_url: str) -> list[Run]:
    """Every run of an acceptance case, checked like run.py checks it through the gateway."""
    runner = acceptance_runner()
    wf = case["workflow"]
    dag = compile_json(wf)
    played = []
    for r, spec in enumerate(case.get("runs", [])):
        run = start_json(wf, spec.get("input", {}), dag=dag, execution_id=f"case-{r}")
        for step in spec.get("steps", []):
            await _play_step(run, step)
        exp = spec.get("expect", {})
        outcome = await run.wait(spec.get("timeout", 60))
        if exp.get("status"):
            assert outcome.status == exp["status"], (outcome.status, outcome.error)
        if "outputs" in exp:
            runner.same(exp["outputs"], outcome.outputs, "outputs")
        if "outputsSubset" in exp:
            runner.subset(exp["outputsSubset"], outcome.outputs, "outputs")
            assert set(exp["outputsSubset"]) == set(outcome.outputs)
        if "errorNodeId" in exp:
            assert (outcome.error or {}).get("nodeId") == exp["errorNodeId"], outcome.error
        events = event_triples(run.store)
        runner.check_event_log(events, wf)
        runner.check_events(exp.get("events", {}), events)
        logs = [node_log_json(n) for n in run.store.node_logs]
        if "overlap" in exp:
            runner.check_overlap(logs, set(exp["overlap"]))
        for nid, want in exp.get("nodeLogs", {}).items():
            mine = [n for n in logs if n["nodeId"] == nid]
            assert mine, f"no node log for {nid}"
            runner.subset(want, mine[-1])
        for secret in exp.get("neverContains", []):
            blob = json.dumps([outcome.outputs, outcome.error, [e[2] for e in events], logs],
                              default=str)
            assert secret not in blob, "a secret value leaked into outputs/events/logs"
        played.append(run)
    return played


async def _play_step(run: Run, step: Mapping[str, Any]) -> None:
    if "waitStatus" in step:
        outcome = await run.wait(step.get("timeout", 30))
        assert outcome.status == step["waitStatus"], (outcome.status, outcome.error)
        if "pausedNodes" in step:
            got = sorted(p.node_id for p in outcome.paused_nodes)
            assert got == sorted(step["pausedNodes"]), got
    if "resume" in step:
        code = _resume(run, step["resume"])
        want = step.get("expectCode", 202)
        assert code == want, f"resume -> {code}, expected {want}"
    if "cancel" in step:
        if run.handle.done() and (await run.wait()).status == "PAUSED":
            run.continue_with(cancel=True)  # a paused execution: the worker cancels by replay
        else:
            run.handle.cancel("cancelled by the test")
    if "sleepMs" in step:
        await asyncio.sleep(step["sleepMs"] / 1000)


def _resume(run: Run, body: Mapping[str, Any]) -> int:
    """What the gateway and state service do with ``POST /resume``: 409 when not parked there,
    422 when the input does not match the node's inputSchema, else queue it (a new engine run)."""
    from weft_executor.handlers.start import schema_error

    outcome = run.outcome
    if outcome is None or outcome.status != "PAUSED":
        return 409
    parked = [p for p in outcome.paused_nodes if p.node_id == body.get("nodeId")]
    if not parked:
        return 409
    schema = parked[0].input_schema
    if schema and schema_error(dict(schema), body.get("input")) is not None:
        return 422
    resume_id = f"r{len(run.handles)}"
    run.continue_with(resumes=[Resume(resume_id, parked[0].node_id, parked[0].scope, body.get("input"))])
    run.outcome = None
    return 202


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` (state the engine changes without an event to wait on)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.005)



# ---------------------------------------------------------------- test doubles
Behaviour = Callable[[NodeContext], Awaitable[NodeResult]]


class Script:
    """Install with ``Script.install(monkeypatch)``: replaces ``HANDLERS["wait"]`` for the test."""

    type: ClassVar[str] = "wait"

    @classmethod
    def install(cls, monkeypatch: Any) -> Script:
        script = cls(HANDLERS["wait"])
        monkeypatch.setitem(HANDLERS, "wait", script)
        return script

    def __init__(self, real: Any) -> None:
        self.real = real
        self.behaviours: dict[str, Behaviour] = {}
        self.calls: Counter[str] = Counter()
        self.running = 0
        self.max_running = 0
        self.cancelled: list[str] = []
        self.finished: list[str] = []

    def on(self, node_id: str, behaviour: Behaviour) -> None:
        self.behaviours[node_id] = behaviour

    async def execute(self, ctx: NodeContext) -> NodeResult:
        fn = self.behaviours.get(ctx.node.id)
        if fn is None:
            return await self.real.execute(ctx)  # type: ignore[no-any-return]
        key = scope_key(ctx.node.id, ctx.scope)
        self.calls[key] += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            result = await fn(ctx)
            self.finished.append(key)
            return result
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.running -= 1


def sleep(seconds: float, output: Any = "slept") -> Behaviour:
    async def run(ctx: NodeContext) -> NodeResult:
        await asyncio.sleep(seconds)
        return NodeResult(output=output)

    return run


def value(output: Any = None, **kw: Any) -> Behaviour:
    async def run(ctx: NodeContext) -> NodeResult:
        return NodeResult(output=output, **kw)

    return run


def fail(message: str = "boom", code: str = "E_TEST", *, status: int | None = None,
         retryable: bool = True, after: float = 0.0) -> Behaviour:
    async def run(ctx: NodeContext) -> NodeResult:
        if after:
            await asyncio.sleep(after)
        raise NodeFailure(message, code, status=status, retryable=retryable)

    return run


def flaky(failures: int, output: Any = "ok") -> Behaviour:
    """Fails the first ``failures`` attempts (retryable), then returns ``output``."""

    async def run(ctx: NodeContext) -> NodeResult:
        if ctx.attempt <= failures:
            raise NodeFailure(f"attempt {ctx.attempt} failed", "FLAKY")
        return NodeResult(output={"output": output, "attempt": ctx.attempt})

    return run


def echo_scope() -> Behaviour:
    async def run(ctx: NodeContext) -> NodeResult:
        return NodeResult(output=[[s.container, s.index] for s in ctx.scope])

    return run


# ---------------------------------------------------------------- workflow builders
def W(id: str, **kw: Any) -> dict[str, Any]:
    """A ``wait`` node (scripted by tests through ``Script``)."""
    return {"id": id, "type": "wait", "config": {"durationMs": 0}, **kw}


def T(id: str, expression: str, **kw: Any) -> dict[str, Any]:
    return {"id": id, "type": "transform", "config": {"expression": expression}, **kw}


def O(id: str, value: Any, name: str | None = None, **kw: Any) -> dict[str, Any]:  # noqa: E743
    cfg: dict[str, Any] = {"value": value}
    if name:
        cfg["name"] = name
    return {"id": id, "type": "output", "config": cfg, **kw}


def L(id: str, **config: Any) -> dict[str, Any]:
    parent = config.pop("parent", None)
    node = {"id": id, "type": "loop", "config": config}
    if parent:
        node["parent"] = parent
    return node


def P(id: str, **config: Any) -> dict[str, Any]:
    parent = config.pop("parent", None)
    node = {"id": id, "type": "parallel", "config": config}
    if parent:
        node["parent"] = parent
    return node


def wf(*nodes: dict[str, Any], edges: Any = (), variables: dict[str, Any] | None = None,
       id: str = "t") -> dict[str, Any]:
    """A workflow: a ``start`` node plus ``nodes``; edges as (source, target[, handle])."""
    out: dict[str, Any] = {
        "id": id,
        "nodes": [{"id": "start", "type": "start"}, *nodes],
        "edges": [
            {"source": e[0], "target": e[1], **({"sourceHandle": e[2]} if len(e) > 2 else {})}
            for e in edges
        ],
    }
    if variables:
        out["variables"] = variables
    return out


def trace(events: list[dict[str, Any]], *, with_scope: bool = False) -> list[str]:
    """``["execution:started", "node:started a", ...]`` (``a@L:0`` with scopes)."""
    out = []
    for e in events:
        nid = e.get("nodeId")
        if nid is None:
            out.append(e["type"])
            continue
        name = nid
        if with_scope and e.get("scope"):
            name += "@" + "/".join(f"{s['container']}:{s['index']}" for s in e["scope"])
        out.append(f"{e['type']} {name}")
    return out
