"""The subworkflow handler run directly over a scripted ``ChildExecutions`` (no services): what it
starts, how each child outcome maps to a result, a failure or a park, the depth limit, the
idempotency key per attempt, cancelling the child with the node, and the state service's
reading of the park (``awaited_child``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

import weft_executor.handlers  # noqa: F401  (registers the built-in handlers)
from weft_common import jsonutil
from weft_common.compiled import CompiledNode
from weft_common.errors import NotFound
from weft_executor.handlers.base import HANDLERS, NodeContext, NodeFailure, NodeResult
from weft_executor.handlers.subworkflow import waiting_schema
from weft_executor.resolve import ReferenceResolver
from weft_executor.settings import ExecutorSettings
from weft_executor.subworkflows import ChildExecutions, ChildOutcome
from weft_state.children import awaited_child


class ScriptedChildren(ChildExecutions):
    """Records what the handler asks for; ``outcomes`` says where each child stands."""

    def __init__(
        self, settings: ExecutorSettings, *, depth: int = 0, missing: bool = False
    ) -> None:
        super().__init__(settings, state=None)  # type: ignore[arg-type]
        self.depth = depth
        self.missing = missing
        self.started: list[dict[str, Any]] = []
        self.outcomes: dict[str, ChildOutcome] = {}
        self.cancelled: list[str] = []
        self.block = False
        self.waiting = asyncio.Event()
        self.parent_gone = False

    async def lineage(self, execution_id: str) -> tuple[int, str]:
        return self.depth, "alice"

    async def start(self, **request: Any) -> str:
        if self.missing:
            raise NotFound(f"workflow {request['workflow_id']!r} not found")
        self.started.append(request)
        return f"child-{len(self.started)}"

    async def wait(self, execution_id: str, *, within_s: float) -> ChildOutcome:
        if self.block:
            self.waiting.set()
            await asyncio.sleep(3600)
        return self.outcomes.get(
            execution_id, ChildOutcome(execution_id, "wf", "RUNNING", parent_execution_id="ex-1")
        )

    def abandoning(self, parent_execution_id: str) -> bool:
        return self.parent_gone

    async def cancel(self, execution_id: str, reason: str) -> None:
        self.cancelled.append(execution_id)


def ctx_for(
    children: ChildExecutions,
    config: dict[str, Any],
    *,
    attempt: int = 1,
    roots: dict[str, Any] | None = None,
    **fields: Any,
) -> NodeContext:
    data = dict(roots or {})
    resolver = ReferenceResolver(data.__getitem__, execution_id="ex-1", env_allow=())
    return NodeContext(
        execution_id="ex-1",
        node=CompiledNode(id="sub", type="subworkflow", config=config),
        scope=(),
        attempt=attempt,
        resolver=resolver,
        idempotency_key="ex-1:sub",
        emit_chunk=lambda _c: None,
        services=SimpleNamespace(settings=children.settings, subworkflows=children),
        **fields,
    )


async def run(ctx: NodeContext) -> NodeResult:
    return await HANDLERS["subworkflow"].execute(ctx)


@pytest.fixture
def children() -> ScriptedChildren:
    return ScriptedChildren(ExecutorSettings(max_subworkflow_depth=3))


async def test_starts_the_child_with_rendered_input_and_returns_its_outputs(
    children: ScriptedChildren,
) -> None:
    children.outcomes["child-1"] = ChildOutcome(
        "child-1", "kid", "SUCCEEDED", parent_execution_id="ex-1", outputs={"total": 42}
    )
    ctx = ctx_for(
        children,
        {
            "workflowId": "kid",
            "version": "2",
            "input": {"n": "{{start.n}}", "label": "n={{start.n}}"},
        },
        roots={"start": {"n": 7}},
    )
    result = await run(ctx)
    assert result.output == {"total": 42}
    assert result.event_fields == {"childExecutionId": "child-1"}
    assert result.input == {
        "workflowId": "kid",
        "version": 2,
        "input": {"n": 7, "label": "n=7"},
        "childExecutionId": "child-1",
    }
    [request] = children.started
    assert request == {
        "parent_execution_id": "ex-1",
        "parent_node_id": "sub",
        "idempotency_key": "subworkflow:ex-1:sub:1",
        "workflow_id": "kid",
        "version": 2,
        "input": {"n": 7, "label": "n=7"},
        "depth": 1,
        "owner": "alice",
    }


async def test_each_attempt_has_its_own_child_key(children: ScriptedChildren) -> None:
    await run(ctx_for(children, {"workflowId": "kid"}, attempt=1))
    await run(ctx_for(children, {"workflowId": "kid"}, attempt=1))  # the same run after a crash
    await run(ctx_for(children, {"workflowId": "kid"}, attempt=2))  # a retry
    keys = [r["idempotency_key"] for r in children.started]
    assert keys == ["subworkflow:ex-1:sub:1", "subworkflow:ex-1:sub:1", "subworkflow:ex-1:sub:2"]


async def test_failed_child_is_a_routable_error_naming_child_and_node(
    children: ScriptedChildren,
) -> None:
    child_error = {
        "message": "card declined",
        "code": "HTTP_STATUS",
        "nodeId": "charge",
        "status": 402,
    }
    children.outcomes["child-1"] = ChildOutcome(
        "child-1", "billing", "FAILED", parent_execution_id="ex-1", error=child_error
    )
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for(children, {"workflowId": "billing"}))
    failure = info.value
    assert failure.code == "SUBWORKFLOW_FAILED"
    assert failure.message == (
        "subworkflow node 'sub': child execution child-1 (workflow 'billing') failed at node "
        "'charge': card declined"
    )
    assert failure.details == {
        "childExecutionId": "child-1",
        "workflowId": "billing",
        "error": child_error,
    }
    assert failure.retryable


async def test_cancelled_child_fails_the_node(children: ScriptedChildren) -> None:
    children.outcomes["child-1"] = ChildOutcome(
        "child-1", "kid", "CANCELLED", parent_execution_id="ex-1"
    )
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for(children, {"workflowId": "kid"}))
    assert info.value.code == "SUBWORKFLOW_CANCELLED"
    assert "child-1" in info.value.message


async def test_unknown_workflow(children: ScriptedChildren) -> None:
    children.missing = True
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for(children, {"workflowId": "ghost", "version": 3}))
    assert info.value.code == "SUBWORKFLOW_NOT_FOUND"
    assert "workflow 'ghost' version 3 is not registered" in info.value.message
    assert not info.value.retryable


async def test_depth_limit_refuses_to_start_a_child(children: ScriptedChildren) -> None:
    children.depth = 3  # the parent is already at the limit
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for(children, {"workflowId": "self"}))
    assert info.value.code == "SUBWORKFLOW_DEPTH"
    assert "4 deep (limit 3)" in info.value.message
    assert children.started == []


async def test_depth_failure_of_a_child_keeps_its_code_upwards(children: ScriptedChildren) -> None:
    children.outcomes["child-1"] = ChildOutcome(
        "child-1",
        "self",
        "FAILED",
        parent_execution_id="ex-1",
        error={"message": "too deep", "code": "SUBWORKFLOW_DEPTH", "nodeId": "sub"},
    )
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for(children, {"workflowId": "self"}))
    assert info.value.code == "SUBWORKFLOW_DEPTH"
    assert not info.value.retryable


async def test_paused_child_parks_the_node_with_a_pause_that_names_it(
    children: ScriptedChildren,
) -> None:
    children.outcomes["child-1"] = ChildOutcome(
        "child-1",
        "kid",
        "PAUSED",
        parent_execution_id="ex-1",
        paused_nodes=[{"nodeId": "approve", "reason": "ok?"}],
    )
    result = await run(ctx_for(children, {"workflowId": "kid"}))
    assert result.pause is not None
    assert (
        result.pause.reason
        == "waiting for child child-1: resume node 'approve' of execution child-1"
    )
    assert result.pause.input_schema == waiting_schema("child-1")
    # The state service finds the child a pause waits for from the stored schema.
    assert awaited_child(jsonutil.dumps(result.pause.input_schema)) == "child-1"
    assert awaited_child(jsonutil.dumps({"type": "object"})) is None
    assert awaited_child("") is None


async def test_a_grandchild_waiting_is_reported_upwards(children: ScriptedChildren) -> None:
    children.outcomes["child-1"] = ChildOutcome(
        "child-1",
        "kid",
        "PAUSED",
        parent_execution_id="ex-1",
        paused_nodes=[
            {"nodeId": "sub", "reason": "waiting for child g-9: resume node 'ok' of execution g-9"}
        ],
    )
    result = await run(ctx_for(children, {"workflowId": "kid"}))
    assert result.pause is not None
    assert result.pause.reason == "waiting for child g-9: resume node 'ok' of execution g-9"


async def test_resumed_node_reads_the_child_it_waited_for(children: ScriptedChildren) -> None:
    children.outcomes["child-7"] = ChildOutcome(
        "child-7", "kid", "SUCCEEDED", parent_execution_id="ex-1", outputs={"ok": True}
    )
    ctx = ctx_for(
        children,
        {"workflowId": "kid"},
        resumed=True,
        resume_input={"childExecutionId": "child-7", "status": "SUCCEEDED"},
    )
    result = await run(ctx)
    assert result.output == {"ok": True}
    assert children.started == []  # no second child


async def test_resume_naming_a_stranger_is_refused(children: ScriptedChildren) -> None:
    children.outcomes["other"] = ChildOutcome(
        "other", "kid", "SUCCEEDED", parent_execution_id="ex-999", outputs={"stolen": True}
    )
    ctx = ctx_for(
        children, {"workflowId": "kid"}, resumed=True, resume_input={"childExecutionId": "other"}
    )
    with pytest.raises(NodeFailure) as info:
        await run(ctx)
    assert "is not a child of execution ex-1" in info.value.message


async def test_cancelling_the_node_cancels_the_child(children: ScriptedChildren) -> None:
    children.block = True
    task = asyncio.create_task(run(ctx_for(children, {"workflowId": "kid"})))
    await children.waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert children.cancelled == ["child-1"]


async def test_a_worker_letting_go_leaves_the_child_running(children: ScriptedChildren) -> None:
    children.block = True
    children.parent_gone = True
    task = asyncio.create_task(run(ctx_for(children, {"workflowId": "kid"})))
    await children.waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert children.cancelled == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "config.workflowId is required"),
        ({"workflowId": 5}, "config.workflowId must be a workflow id"),
        ({"workflowId": "kid", "version": "latest"}, "config.version must be a positive integer"),
        ({"workflowId": "kid", "version": 0}, "config.version must be a positive integer"),
        ({"workflowId": "kid", "version": 1.5}, "config.version must be a positive integer"),
    ],
)
async def test_config_errors_name_the_field(
    children: ScriptedChildren, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(NodeFailure) as info:
        await run(ctx_for(children, config))
    assert info.value.code == "CONFIG_INVALID"
    assert message in info.value.message


async def test_without_the_executor_service_the_node_says_so() -> None:
    ctx = ctx_for(ScriptedChildren(ExecutorSettings()), {"workflowId": "kid"})
    ctx.services = SimpleNamespace(settings=ExecutorSettings())
    with pytest.raises(NodeFailure) as info:
        await run(ctx)
    assert info.value.code == "SUBWORKFLOW_UNAVAILABLE"


class ChainState:
    """A state client answering GetExecution from a parent map; counts the lookups."""

    def __init__(self, parents: dict[str, str]) -> None:
        self.parents = parents
        self.lookups = 0

    async def get_execution(self, execution_id: str) -> Any:
        from weft.workflow.v1 import workflow_pb2

        self.lookups += 1
        return workflow_pb2.Execution(
            execution_id=execution_id,
            parent_execution_id=self.parents.get(execution_id, ""),
            owner="team-a",
        )


async def test_lineage_counts_ancestors_and_remembers_them() -> None:
    state = ChainState({"c3": "c2", "c2": "c1", "c1": "top"})
    children = ChildExecutions(ExecutorSettings(), state)  # type: ignore[arg-type]
    assert await children.lineage("c3") == (3, "team-a")
    assert state.lookups == 4
    assert await children.lineage("c2") == (2, "team-a")
    assert await children.lineage("top") == (0, "team-a")
    assert state.lookups == 4  # all remembered from the first walk
    state.parents["c4"] = "c3"
    assert await children.lineage("c4") == (4, "team-a")
    assert state.lookups == 5  # one lookup: its parent's depth was known


async def test_lineage_of_a_runaway_chain_is_over_the_limit() -> None:
    parents = {f"e{i}": f"e{i + 1}" for i in range(100)}
    state = ChainState(parents)
    children = ChildExecutions(ExecutorSettings(max_subworkflow_depth=4), state)  # type: ignore[arg-type]
    depth, _ = await children.lineage("e0")
    assert depth > 4
    assert state.lookups <= 6


async def test_state_service_blips_are_retried_but_real_errors_are_not() -> None:
    from weft_common.errors import Unavailable

    class Flaky(ChainState):
        def __init__(self) -> None:
            super().__init__({})
            self.failures = 2

        async def get_execution(self, execution_id: str) -> Any:
            if execution_id == "gone":
                self.lookups += 1
                raise NotFound("execution 'gone' not found")
            if self.failures:
                self.failures -= 1
                raise Unavailable("state service restarting")
            return await super().get_execution(execution_id)

    state = Flaky()
    children = ChildExecutions(ExecutorSettings(lease_ms=5000), state)  # type: ignore[arg-type]
    outcome = await children.outcome("kid")
    assert outcome.execution_id == "kid" and state.failures == 0
    with pytest.raises(NotFound):
        await children.outcome("gone")
    assert state.lookups == 2  # one successful read, one NOT_FOUND: no retry of the latter


def test_child_keys_stay_within_the_state_service_limit() -> None:
    from weft_executor.subworkflows import child_key

    assert child_key("ex-1:sub", 2) == "subworkflow:ex-1:sub:2"
    deep = "ex-1:sub" + "".join(f"@loop{i}.{i * 1000}" for i in range(40))
    key = child_key(deep, 1)
    assert len(key) <= 200 and key.endswith(":1")
    assert key == child_key(deep, 1) != child_key(deep, 2)
    assert child_key(deep + "x", 1) != key
