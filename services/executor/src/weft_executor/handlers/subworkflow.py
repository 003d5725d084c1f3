"""The ``subworkflow`` node (SPEC section 3): run a registered workflow as a child execution.

Config: ``workflowId``, ``version`` (optional: pins a version; default the latest at start),
``input`` (templated; the child's execution input). Output: the child's outputs.

The node starts the child (its own execution and event log, linked to this one), then waits for
it in place while that is short: up to ``ExecutorSettings.durable_wait_threshold_ms``. A child
that pauses (an approval inside it), or that runs longer, parks this node instead: no worker is
held, and the pause's ``inputSchema`` names the child it waits for. When the child ends, the
state service claims that pause with ``{childExecutionId, status}`` in the same transaction, so
the parent is woken exactly once even across restarts; this node then runs again, reads the
child's outcome and completes or fails.

Failures are routable: ``SUBWORKFLOW_FAILED`` (the child's error in ``details``),
``SUBWORKFLOW_CANCELLED``, ``SUBWORKFLOW_NOT_FOUND``, ``SUBWORKFLOW_DEPTH`` (nesting beyond
``max_subworkflow_depth``; a child failing for that reason reports the same code upwards, so a
runaway recursion names its cause at the top).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from weft_common.errors import InvalidArgument, NotFound

from ..subworkflows import ChildExecutions, ChildOutcome, child_key
from ._config import config_of, require, settings_of
from .base import NodeContext, NodeFailure, NodeResult, Pause, register

__all__ = ["SubworkflowHandler", "waiting_schema"]

_WAITING = "waiting for child "


def waiting_schema(child_id: str) -> dict[str, Any]:
    """The parked node's inputSchema: a resume must name the child it waits for."""
    return {
        "type": "object",
        "required": ["childExecutionId"],
        "properties": {"childExecutionId": {"const": child_id}},
    }


def _invalid(ctx: NodeContext, message: str) -> NodeFailure:
    return NodeFailure(
        f"subworkflow node {ctx.node.id!r}: {message}", code="CONFIG_INVALID", retryable=False
    )


def _version(ctx: NodeContext, raw: Any) -> int:
    if raw is None or raw == "":
        return 0
    if isinstance(raw, bool):
        raise _invalid(ctx, f"config.version must be a positive integer, got {raw!r}")
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise _invalid(ctx, f"config.version must be a positive integer, got {raw!r}") from None
    if version < 1 or (version != raw and str(version) != str(raw).strip()):
        raise _invalid(ctx, f"config.version must be a positive integer, got {raw!r}")
    return version


class SubworkflowHandler:
    type: ClassVar[str] = "subworkflow"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        children = getattr(ctx.services, "subworkflows", None)
        if not isinstance(children, ChildExecutions):
            raise NodeFailure(
                f"subworkflow node {ctx.node.id!r}: this engine runs without the state service "
                "(sub-workflows need the executor service)",
                code="SUBWORKFLOW_UNAVAILABLE",
                retryable=False,
            )
        config = config_of(ctx)
        workflow_id = ctx.resolver.render(require(ctx, "workflowId"))
        if not isinstance(workflow_id, str) or not workflow_id:
            raise _invalid(ctx, f"config.workflowId must be a workflow id, got {workflow_id!r}")
        version = _version(ctx, ctx.resolver.render(config.get("version")))
        child_input = ctx.resolver.render(config.get("input", {}))
        record: dict[str, Any] = {"workflowId": workflow_id, "input": child_input}
        if version:
            record["version"] = version

        if ctx.resumed:
            child_id = self._resumed_child(ctx)
            # This run's failure was already decided by the child it waited for: a retry would
            # only read the same outcome again.
            retryable = False
        else:
            child_id = await self._start_child(ctx, children, workflow_id, version, child_input)
            retryable = True
        record["childExecutionId"] = child_id

        within_s = settings_of(ctx).durable_wait_threshold_ms / 1000
        try:
            outcome = await children.wait(child_id, within_s=within_s)
        except asyncio.CancelledError:
            # The node gave up on the child (parent cancelled or failed elsewhere, timeout):
            # cancel it too, unless this worker is just letting go of the parent.
            if not children.abandoning(ctx.execution_id):
                await asyncio.shield(
                    children.cancel(child_id, f"parent node {ctx.node.id} was cancelled")
                )
            raise
        if outcome.parent_execution_id != ctx.execution_id:
            raise NodeFailure(
                f"subworkflow node {ctx.node.id!r}: execution {child_id} is not a child of "
                f"execution {ctx.execution_id}",
                code="SUBWORKFLOW_FAILED",
                retryable=False,
            )
        return self._settle(ctx, outcome, record, retryable)

    @staticmethod
    def _resumed_child(ctx: NodeContext) -> str:
        value = ctx.resume_input if isinstance(ctx.resume_input, dict) else {}
        child_id = value.get("childExecutionId")
        if not isinstance(child_id, str) or not child_id:
            raise NodeFailure(
                f"subworkflow node {ctx.node.id!r}: resumed without a childExecutionId",
                code="SUBWORKFLOW_FAILED",
                retryable=False,
            )
        return child_id

    @staticmethod
    async def _start_child(
        ctx: NodeContext,
        children: ChildExecutions,
        workflow_id: str,
        version: int,
        child_input: Any,
    ) -> str:
        depth, owner = await children.lineage(ctx.execution_id)
        limit = settings_of(ctx).max_subworkflow_depth
        if depth + 1 > limit:
            raise NodeFailure(
                f"subworkflow node {ctx.node.id!r}: starting workflow {workflow_id!r} would nest "
                f"sub-workflows {depth + 1} deep (limit {limit}); is the workflow calling itself?",
                code="SUBWORKFLOW_DEPTH",
                details={"depth": depth + 1, "limit": limit, "workflowId": workflow_id},
                retryable=False,
            )
        try:
            return await children.start(
                parent_execution_id=ctx.execution_id,
                parent_node_id=ctx.node.id,
                idempotency_key=child_key(ctx.idempotency_key, ctx.attempt),
                workflow_id=workflow_id,
                version=version,
                input=child_input,
                depth=depth + 1,
                owner=owner,
            )
        except NotFound as exc:
            what = f"workflow {workflow_id!r}" + (f" version {version}" if version else "")
            raise NodeFailure(
                f"subworkflow node {ctx.node.id!r}: {what} is not registered ({exc})",
                code="SUBWORKFLOW_NOT_FOUND",
                details={"workflowId": workflow_id, "version": version or None},
                retryable=False,
            ) from None
        except InvalidArgument as exc:
            raise _invalid(ctx, str(exc)) from None

    @staticmethod
    def _settle(
        ctx: NodeContext, outcome: ChildOutcome, record: dict[str, Any], retryable: bool
    ) -> NodeResult:
        child_id = outcome.execution_id
        link = {"childExecutionId": child_id}
        if outcome.status == "SUCCEEDED":
            return NodeResult(output=outcome.outputs, input=record, event_fields=link)
        if outcome.status == "FAILED":
            error = outcome.error or {}
            code = (
                "SUBWORKFLOW_DEPTH"
                if error.get("code") == "SUBWORKFLOW_DEPTH"
                else "SUBWORKFLOW_FAILED"
            )
            at = f" at node {error['nodeId']!r}" if error.get("nodeId") else ""
            raise NodeFailure(
                f"subworkflow node {ctx.node.id!r}: child execution {child_id} "
                f"(workflow {outcome.workflow_id!r}) failed{at}: {error.get('message', '')}",
                code=code,
                details={**link, "workflowId": outcome.workflow_id, "error": error},
                retryable=retryable and code == "SUBWORKFLOW_FAILED",
            )
        if outcome.status == "CANCELLED":
            raise NodeFailure(
                f"subworkflow node {ctx.node.id!r}: child execution {child_id} "
                f"(workflow {outcome.workflow_id!r}) was cancelled",
                code="SUBWORKFLOW_CANCELLED",
                details={**link, "workflowId": outcome.workflow_id, "error": outcome.error},
                retryable=False,
            )
        # Paused (or still running after the in-place wait): park until the child ends.
        return NodeResult(
            pause=Pause(reason=_reason(outcome), input_schema=waiting_schema(child_id)),
            input=record,
        )


def _reason(outcome: ChildOutcome) -> str:
    """Tell the user where to act: the innermost paused execution and node."""
    child_id = outcome.execution_id
    for paused in outcome.paused_nodes:
        reason = str(paused.get("reason") or "")
        if reason.startswith(_WAITING):
            return reason  # a grandchild is the one waiting: point there
    waiting_on_people = [p for p in outcome.paused_nodes if "wakeAt" not in p]
    if waiting_on_people:
        nodes = ", ".join(repr(p["nodeId"]) for p in waiting_on_people)
        return f"{_WAITING}{child_id}: resume node {nodes} of execution {child_id}"
    if outcome.paused_nodes:
        first = outcome.paused_nodes[0]
        return f"{_WAITING}{child_id}: its node {first['nodeId']!r} waits until {first['wakeAt']}"
    return f"{_WAITING}{child_id} (status {outcome.status})"


register(SubworkflowHandler())
