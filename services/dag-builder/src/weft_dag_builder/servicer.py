"""``DagBuilderService``: proto <-> domain conversion, nothing else.

An invalid workflow is an answer (``valid=false`` plus diagnostics), not an RPC error. Work runs
in a thread so a large compile does not stall the event loop (health checks stay answered).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from weft.dagbuilder.v1 import dag_builder_pb2, dag_builder_pb2_grpc
from weft.workflow.v1 import workflow_pb2
from weft_common.compiled import dag_to_proto
from weft_common.workflow import definition_from_proto

from .compiler import analyze_and_compile, validate_workflow
from .diagnostics import Diagnostic
from .limits import Limits

__all__ = ["DagBuilderServicer"]

log = logging.getLogger("weft.dag_builder")


def _diagnostics_to_proto(diagnostics: list[Diagnostic]) -> list[workflow_pb2.Diagnostic]:
    return [
        workflow_pb2.Diagnostic(code=d.code, message=d.message, node_id=d.node_id,
                                edge_id=d.edge_id, field=d.field)
        for d in diagnostics
    ]


class DagBuilderServicer(dag_builder_pb2_grpc.DagBuilderServiceServicer):
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    async def ValidateWorkflow(
        self, request: dag_builder_pb2.ValidateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> dag_builder_pb2.ValidateWorkflowResponse:
        def run() -> dag_builder_pb2.ValidateWorkflowResponse:
            diagnostics = validate_workflow(definition_from_proto(request.workflow), limits=self.limits)
            return dag_builder_pb2.ValidateWorkflowResponse(
                valid=not diagnostics, diagnostics=_diagnostics_to_proto(diagnostics)
            )

        return await asyncio.to_thread(run)

    async def CompileWorkflow(
        self, request: dag_builder_pb2.CompileWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> dag_builder_pb2.CompileWorkflowResponse:
        def run() -> dag_builder_pb2.CompileWorkflowResponse:
            started = time.perf_counter()
            defn = definition_from_proto(request.workflow)
            dag, diagnostics = analyze_and_compile(defn, limits=self.limits)
            log.debug("compiled workflow %r: %d nodes, %d edges, %d diagnostics in %.1f ms", defn.id,
                      len(defn.nodes), len(defn.edges), len(diagnostics),
                      (time.perf_counter() - started) * 1000)
            if dag is None:
                return dag_builder_pb2.CompileWorkflowResponse(
                    valid=False, diagnostics=_diagnostics_to_proto(diagnostics)
                )
            return dag_builder_pb2.CompileWorkflowResponse(valid=True, dag=dag_to_proto(dag))

        return await asyncio.to_thread(run)
