"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``."""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _ref("Problem")}}}


_SSE = {
    "description": "The execution's event log as Server-Sent Events: `id: <seq>`, "
                   "`event: <type>`, `data: <Event JSON>`; heartbeat comments while idle; "
                   "the stream ends after execution:completed|failed|cancelled.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_COMMON_ERRORS = {
    "401": _problem("Missing or invalid bearer token"),
    "404": _problem("Not found (or not visible to this token)"),
    "503": _problem("An upstream service is unavailable"),
}

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"},
            "instance": {"type": "string"}, "code": {"type": "string"},
            "diagnostics": {"type": "array", "items": _ref("Diagnostic")},
        },
    },
    "Diagnostic": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "nodeId": {"type": "string"}, "edgeId": {"type": "string"},
                       "field": {"type": "string"}},
    },
    "WorkflowDefinition": {
        "type": "object",
        "description": "SPEC section 1: the proto3 JSON form of weft.workflow.v1.WorkflowDefinition.",
        "required": ["id", "nodes"],
        "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "description": {"type": "string"}, "inputSchema": {"type": "object"},
            "variables": {"type": "object"},
            "nodes": {"type": "array", "items": {"type": "object", "required": ["id", "type"]}},
            "edges": {"type": "array", "items": {"type": "object", "required": ["source", "target"]}},
        },
    },
    "Scope": {"type": "array", "items": {
        "type": "object", "properties": {"container": {"type": "string"}, "index": {"type": "integer"}}}},
    "Error": {
        "type": ["object", "null"],
        "properties": {"message": {"type": "string"}, "code": {"type": "string"},
                       "nodeId": {"type": ["string", "null"]}, "status": {"type": "integer"}},
    },
    "Execution": {
        "type": "object",
        "required": ["executionId", "workflowId", "status", "outputs", "error", "pausedNodes",
                     "startedAt", "finishedAt"],
        "properties": {
            "executionId": {"type": "string"}, "workflowId": {"type": "string"},
            "workflowVersion": {"type": ["integer", "null"]},
            "status": {"enum": ["PENDING", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED"]},
            "input": {}, "outputs": {"type": ["object", "null"]}, "error": _ref("Error"),
            "pausedNodes": {"type": "array", "items": {
                "type": "object",
                "properties": {"nodeId": {"type": "string"}, "scope": _ref("Scope"),
                               "reason": {"type": "string"}, "inputSchema": {},
                               "wakeAt": {"type": "string", "format": "date-time"}}}},
            "createdAt": {"type": ["string", "null"], "format": "date-time"},
            "startedAt": {"type": ["string", "null"], "format": "date-time"},
            "finishedAt": {"type": ["string", "null"], "format": "date-time"},
            "lastSeq": {"type": "integer"},
            "tokenUsage": _ref("TokenUsage"),
        },
    },
    "TokenUsage": {"type": "object", "properties": {
        "inputTokens": {"type": "integer"}, "outputTokens": {"type": "integer"},
        "estimated": {"type": "boolean"}}},
    "NodeLog": {
        "type": "object",
        "properties": {
            "nodeId": {"type": "string"}, "nodeType": {"type": ["string", "null"]},
            "scope": _ref("Scope"),
            "status": {"enum": ["RUNNING", "SUCCEEDED", "FAILED", "SKIPPED", "PAUSED", "CANCELLED"]},
            "attempt": {"type": "integer"}, "input": {}, "output": {}, "error": _ref("Error"),
            "startedAt": {"type": ["string", "null"], "format": "date-time"},
            "finishedAt": {"type": ["string", "null"], "format": "date-time"},
            "durationMs": {"type": "number"}, "tokenUsage": _ref("TokenUsage"),
        },
    },
    "Event": {
        "type": "object", "required": ["seq", "type", "executionId", "timestamp"],
        "description": "SPEC section 5; also the `data:` of each SSE frame.",
        "properties": {"seq": {"type": "integer"}, "type": {"type": "string"},
                       "executionId": {"type": "string"}, "timestamp": {"type": "string"},
                       "nodeId": {"type": "string"}, "nodeType": {"type": "string"},
                       "scope": _ref("Scope"), "output": {}, "error": _ref("Error"),
                       "content": {"type": "string"}},
    },
    "ExecuteRequest": {"type": "object", "properties": {
        "input": {}, "idempotencyKey": {"type": "string"}, "version": {"type": "integer"}}},
    "RunDefinitionRequest": {"type": "object", "required": ["workflow"], "properties": {
        "workflow": _ref("WorkflowDefinition"), "input": {}, "idempotencyKey": {"type": "string"}}},
    "ExecuteResponse": {"type": "object", "required": ["executionId"], "properties": {
        "executionId": {"type": "string"}, "existing": {"type": "boolean"}}},
}

_EXECUTE_RESPONSES = {
    "200": _SSE,
    "202": _json(_ref("ExecuteResponse"), "Started (Accept: application/json)"),
    "422": _problem("Invalid workflow or input (with diagnostics)"),
    **_COMMON_ERRORS,
}


@cache
def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Readiness: every upstream answers gRPC health checks",
                            "responses": {"200": {"description": "ready"},
                                          "503": _problem("An upstream is not serving")}}},
        "/v1/workflows": {
            "post": {"summary": "Register a definition (a new version if the id exists)",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": _ref("WorkflowDefinition")}}},
                     "responses": {"201": _json({"type": "object", "properties": {
                         "id": {"type": "string"}, "version": {"type": "integer"}}}, "Registered"),
                         "422": _problem("Invalid workflow (with diagnostics)"), **_COMMON_ERRORS}},
            "get": {"summary": "Latest version of every workflow visible to the caller",
                    "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "Workflows")}},
        },
        "/v1/workflows/validate": {"post": {
            "summary": "Validate a definition",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("WorkflowDefinition")}}},
            "responses": {"200": _json({"type": "object", "properties": {
                "valid": {"type": "boolean"},
                "diagnostics": {"type": "array", "items": _ref("Diagnostic")}}}, "Result")}}},
        "/v1/workflows/{id}": {"get": {
            "summary": "Latest definition (`?version=N` for one version); the version is in the "
                       "`Weft-Workflow-Version` header",
            "parameters": [_ID, {"name": "version", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": _json(_ref("WorkflowDefinition"), "The definition"), **_COMMON_ERRORS}}},
        "/v1/workflows/{id}/execute": {"post": {
            "summary": "Start an execution of a registered workflow",
            "parameters": [_ID],
            "requestBody": {"content": {"application/json": {"schema": _ref("ExecuteRequest")}}},
            "responses": _EXECUTE_RESPONSES}},
        "/v1/executions": {
            "post": {"summary": "Run an unregistered definition",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": _ref("RunDefinitionRequest")}}},
                     "responses": _EXECUTE_RESPONSES},
            "get": {"summary": "Recent executions visible to the caller",
                    "parameters": [{"name": "workflowId", "in": "query", "schema": {"type": "string"}},
                                   {"name": "limit", "in": "query", "schema": {"type": "integer"}}],
                    "responses": {"200": _json({"type": "array", "items": _ref("Execution")}, "Executions")}},
        },
        "/v1/executions/{id}": {"get": {
            "summary": "An execution", "parameters": [_ID],
            "responses": {"200": _json(_ref("Execution"), "The execution"), **_COMMON_ERRORS}}},
        "/v1/executions/{id}/stream": {"get": {
            "summary": "The event log as SSE; Last-Event-ID (or ?after=N) replays from there",
            "parameters": [_ID,
                           {"name": "after", "in": "query", "schema": {"type": "integer"}},
                           {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}}],
            "responses": {"200": _SSE, **_COMMON_ERRORS}}},
        "/v1/executions/{id}/nodes": {"get": {
            "summary": "Node logs", "parameters": [_ID],
            "responses": {"200": _json({"type": "array", "items": _ref("NodeLog")}, "Node runs"),
                          **_COMMON_ERRORS}}},
        "/v1/executions/{id}/resume": {"post": {
            "summary": "Resume a paused node",
            "parameters": [_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["nodeId"],
                "properties": {"nodeId": {"type": "string"}, "input": {}, "scope": _ref("Scope")}}}}},
            "responses": {"202": {"description": "Queued"},
                          "409": _problem("Not paused there (or already resumed)"),
                          "422": _problem("Input does not match the node's inputSchema"),
                          **_COMMON_ERRORS}}},
        "/v1/executions/{id}/cancel": {"post": {
            "summary": "Cancel an execution", "parameters": [_ID],
            "responses": {"202": {"description": "Cancellation requested"}, **_COMMON_ERRORS}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Weft HTTP API", "version": "1.0.0",
                 "description": "Workflows, executions and their live event streams (SPEC section 6)."},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
