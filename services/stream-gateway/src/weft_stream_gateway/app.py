"""The HTTP API of SPEC section 6 as a Starlette application."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import weft_common.jsonutil as jsonutil
from weft.workflow.v1 import workflow_pb2
from weft_common.errors import InvalidArgument, WeftError
from weft_common.workflow import definition_to_proto_from_json

from .auth import TokenAuth
from .openapi import openapi_document
from .problems import HttpProblem, JsonResponse, problem_response, weft_error_response
from .settings import GatewaySettings
from .sse import SseResponse, event_frames
from .upstream import Upstreams
from .views import (
    execution_view,
    node_log_view,
    workflow_definition_view,
    workflow_summary_view,
)

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("weft.gateway")

EXECUTION_ID_HEADER = "Weft-Execution-Id"


class Gateway:
    """Route handlers sharing the upstream clients, the token table and the open streams."""

    def __init__(self, settings: GatewaySettings, upstreams: Upstreams, auth: TokenAuth) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.auth = auth
        self.streams: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ helpers
    def owner(self, request: Request) -> str:
        return self.auth.owner_of(
            request.headers.get("authorization"), request.query_params.get("access_token")
        )

    async def body(self, request: Request) -> Any:
        limit = self.settings.http_max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HttpProblem(413, f"request body over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpProblem(413, f"request body over {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw:
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HttpProblem(400, f"request body is not valid JSON: {exc}") from None

    @staticmethod
    def object_body(body: Any, what: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise HttpProblem(400, f"{what} must be a JSON object")
        return body

    @staticmethod
    def definition(data: Any) -> workflow_pb2.WorkflowDefinition:
        """The workflow from its JSON form; a malformed shape is an invalid workflow (422)."""
        try:
            return definition_to_proto_from_json(data)
        except InvalidArgument as exc:
            raise InvalidArgument(
                exc.message, details={"diagnostics": [{"code": "MALFORMED", "message": exc.message}]}
            ) from None

    @staticmethod
    def wants_stream(request: Request) -> bool:
        return "text/event-stream" in request.headers.get("accept", "")

    def stream(self, execution_id: str, owner: str, after_seq: int,
               headers: dict[str, str] | None = None) -> SseResponse:
        frames = event_frames(
            lambda after: self.upstreams.stream_events(execution_id, after, owner),
            after_seq=after_seq,
            heartbeat_s=self.settings.sse_heartbeat_s,
            retry_ms=self.settings.sse_retry_ms,
        )
        return SseResponse(frames, headers=headers, registry=self.streams)

    async def check_visible(self, execution_id: str, owner: str) -> None:
        """With tokens, the execution must belong to this owner (NotFound otherwise)."""
        if owner:
            await self.upstreams.get_execution(execution_id, owner)

    # ------------------------------------------------------------------ health
    async def healthz(self, request: Request) -> Response:
        return JsonResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        services = await self.upstreams.health()
        if all(v == "SERVING" for v in services.values()):
            return JsonResponse({"status": "ready", "services": services})
        down = ", ".join(f"{k}={v}" for k, v in services.items() if v != "SERVING")
        return problem_response(503, f"upstream services not ready: {down}", services=services)

    async def openapi(self, request: Request) -> Response:
        return JsonResponse(openapi_document())

    # ------------------------------------------------------------------ workflows
    async def validate_workflow(self, request: Request) -> Response:
        self.owner(request)
        body = self.object_body(await self.body(request), "the workflow")
        if "workflow" in body and "nodes" not in body:
            body = self.object_body(body["workflow"], "workflow")
        try:
            definition = definition_to_proto_from_json(body)
        except InvalidArgument as exc:
            return JsonResponse(
                {"valid": False, "diagnostics": [{"code": "MALFORMED", "message": exc.message}]}
            )
        valid, diagnostics = await self.upstreams.validate(definition)
        return JsonResponse({"valid": valid, "diagnostics": diagnostics})

    async def register_workflow(self, request: Request) -> Response:
        owner = self.owner(request)
        definition = self.definition(await self.body(request))
        dag = await self.upstreams.compile(definition)
        workflow_id, version = await self.upstreams.register_workflow(definition, dag, owner)
        return JsonResponse(
            {"id": workflow_id, "version": version}, status_code=201,
            headers={"location": f"/v1/workflows/{workflow_id}?version={version}"},
        )

    async def list_workflows(self, request: Request) -> Response:
        owner = self.owner(request)
        workflows = await self.upstreams.list_workflows(owner)
        return JsonResponse([workflow_summary_view(w) for w in workflows])

    async def get_workflow(self, request: Request) -> Response:
        owner = self.owner(request)
        version = _int_param(request.query_params.get("version"), "version", default=0)
        wf = await self.upstreams.get_workflow(request.path_params["id"], version, owner)
        return JsonResponse(
            workflow_definition_view(wf), headers={"weft-workflow-version": str(wf.version)}
        )

    # ------------------------------------------------------------------ executions
    async def execute_workflow(self, request: Request) -> Response:
        owner = self.owner(request)
        body = self.object_body(await self.body(request), "the request body")
        version = _int_param(
            body.get("version", request.query_params.get("version")), "version", default=0
        )
        started = await self.upstreams.start_execution(
            owner=owner,
            workflow_id=request.path_params["id"],
            version=version,
            input_json=jsonutil.dumps(body.get("input", {})),
            idempotency_key=_idempotency_key(request, body),
        )
        return self.started(request, started.execution_id, started.existing, owner)

    async def run_definition(self, request: Request) -> Response:
        owner = self.owner(request)
        body = self.object_body(await self.body(request), "the request body")
        if "workflow" not in body:
            raise HttpProblem(400, "body must hold 'workflow' (a definition) and 'input'")
        started = await self.upstreams.start_execution(
            owner=owner,
            definition=self.definition(body["workflow"]),
            input_json=jsonutil.dumps(body.get("input", {})),
            idempotency_key=_idempotency_key(request, body),
        )
        return self.started(request, started.execution_id, started.existing, owner)

    def started(self, request: Request, execution_id: str, existing: bool, owner: str) -> Response:
        headers = {EXECUTION_ID_HEADER: execution_id, "location": f"/v1/executions/{execution_id}"}
        if self.wants_stream(request):
            return self.stream(execution_id, owner, 0, headers=headers)
        body: dict[str, Any] = {"executionId": execution_id}
        if existing:
            body["existing"] = True
        return JsonResponse(body, status_code=202, headers=headers)

    async def list_executions(self, request: Request) -> Response:
        owner = self.owner(request)
        limit = _int_param(request.query_params.get("limit"), "limit", default=50)
        executions = await self.upstreams.list_executions(
            owner, request.query_params.get("workflowId", ""), limit
        )
        return JsonResponse([execution_view(e) for e in executions])

    async def get_execution(self, request: Request) -> Response:
        owner = self.owner(request)
        execution = await self.upstreams.get_execution(request.path_params["id"], owner)
        return JsonResponse(execution_view(execution))

    async def node_logs(self, request: Request) -> Response:
        owner = self.owner(request)
        logs = await self.upstreams.list_node_logs(request.path_params["id"], owner)
        return JsonResponse([node_log_view(n) for n in logs])

    async def stream_execution(self, request: Request) -> Response:
        owner = self.owner(request)
        execution_id = request.path_params["id"]
        after = _int_param(
            request.headers.get("last-event-id") or request.query_params.get("after"),
            "Last-Event-ID / after", default=0,
        )
        # Answer 404 as JSON before the stream's headers go out.
        await self.upstreams.get_execution(execution_id, owner)
        return self.stream(execution_id, owner, after, headers={EXECUTION_ID_HEADER: execution_id})

    async def resume(self, request: Request) -> Response:
        owner = self.owner(request)
        execution_id = request.path_params["id"]
        body = self.object_body(await self.body(request), "the request body")
        node_id = body.get("nodeId")
        if not isinstance(node_id, str) or not node_id:
            raise HttpProblem(422, "resume needs 'nodeId' (the paused node) and 'input'")
        scope = body.get("scope") or []
        if not isinstance(scope, list) or not all(
            isinstance(s, dict) and "container" in s and "index" in s for s in scope
        ):
            raise HttpProblem(422, "'scope' must be a list of {container, index}")
        await self.check_visible(execution_id, owner)
        await self.upstreams.resume(execution_id, node_id, scope, jsonutil.dumps(body.get("input", {})))
        return JsonResponse({"executionId": execution_id, "nodeId": node_id}, status_code=202)

    async def cancel(self, request: Request) -> Response:
        owner = self.owner(request)
        execution_id = request.path_params["id"]
        body = await self.body(request)
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        await self.check_visible(execution_id, owner)
        await self.upstreams.cancel(execution_id, str(reason or "cancelled through the API"))
        return JsonResponse({"executionId": execution_id}, status_code=202)

    async def close_streams(self) -> None:
        for task in list(self.streams):
            task.cancel()
        await asyncio.gather(*self.streams, return_exceptions=True)

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/workflows/validate", self.validate_workflow, methods=["POST"]),
            Route("/v1/workflows", self.register_workflow, methods=["POST"]),
            Route("/v1/workflows", self.list_workflows, methods=["GET"]),
            Route("/v1/workflows/{id}", self.get_workflow, methods=["GET"]),
            Route("/v1/workflows/{id}/execute", self.execute_workflow, methods=["POST"]),
            Route("/v1/executions", self.run_definition, methods=["POST"]),
            Route("/v1/executions", self.list_executions, methods=["GET"]),
            Route("/v1/executions/{id}", self.get_execution, methods=["GET"]),
            Route("/v1/executions/{id}/stream", self.stream_execution, methods=["GET"]),
            Route("/v1/executions/{id}/nodes", self.node_logs, methods=["GET"]),
            Route("/v1/executions/{id}/resume", self.resume, methods=["POST"]),
            Route("/v1/executions/{id}/cancel", self.cancel, methods=["POST"]),
        ]


def _int_param(value: Any, name: str, *, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise HttpProblem(400, f"{name} must be an integer, got {value!r}") from None
    if number < 0:
        raise HttpProblem(400, f"{name} must not be negative, got {number}")
    return number


def _idempotency_key(request: Request, body: dict[str, Any]) -> str:
    key = body.get("idempotencyKey") or request.headers.get("idempotency-key") or ""
    if not isinstance(key, str):
        raise HttpProblem(400, "idempotencyKey must be a string")
    return key


async def _weft_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WeftError)
    if exc.http_status >= 500:
        log.warning("%s %s: upstream %s: %s", request.method, request.url.path, exc.status.name, exc.message)
    return weft_error_response(request, exc)


async def _http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpProblem)
    return problem_response(exc.status, exc.detail, slug=exc.slug, instance=request.url.path, **exc.extra)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.status_code != 404 else f"no route {request.method} {request.url.path}"
    return problem_response(exc.status_code, str(detail), instance=request.url.path,
                            headers=dict(exc.headers) if exc.headers else None)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem_response(500, f"internal error: {type(exc).__name__}", instance=request.url.path)


def create_app(gateway: Gateway) -> Starlette:
    origins = [o.strip() for o in gateway.settings.http_cors_origins.split(",") if o.strip()]
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[EXECUTION_ID_HEADER, "Location"],
        )
    ] if origins else []
    return Starlette(
        routes=gateway.routes(),
        middleware=middleware,
        exception_handlers={
            WeftError: _weft_error,
            HttpProblem: _http_problem,
            HTTPException: _http_exception,
            Exception: _unexpected,
        },
    )
