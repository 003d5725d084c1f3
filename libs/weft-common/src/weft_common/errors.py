"""Domain errors and the one place that maps them to gRPC status codes (and back).

Services raise these from domain code; ``ErrorMappingInterceptor`` (see ``grpc_server``) turns them
into proper statuses, so servicers never call ``set_code`` by hand. Clients turn a gRPC error back
into the same class with ``from_rpc_error``.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

__all__ = [
    "AlreadyExists",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "WeftError",
    "from_rpc_error",
]

DETAILS_KEY = "weft-error-details-json"


class WeftError(Exception):
    """An error a caller can act on. ``details`` travels as JSON in trailing metadata."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidArgument(WeftError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422


class NotFound(WeftError):
    status = grpc.StatusCode.NOT_FOUND
    http_status = 404


class AlreadyExists(WeftError):
    status = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class FailedPrecondition(WeftError):
    status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class Conflict(WeftError):
    """Optimistic-concurrency conflict: a stale writer."""

    status = grpc.StatusCode.ABORTED
    http_status = 409


class PermissionDenied(WeftError):
    status = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class Unauthenticated(WeftError):
    status = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class ResourceExhausted(WeftError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class DeadlineExceeded(WeftError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


class Unavailable(WeftError):
    status = grpc.StatusCode.UNAVAILABLE
    http_status = 503


_BY_STATUS: dict[grpc.StatusCode, type[WeftError]] = {
    cls.status: cls
    for cls in (
        InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Conflict, PermissionDenied,
        Unauthenticated, ResourceExhausted, DeadlineExceeded, Unavailable,
    )
}


def trailing_metadata(err: WeftError) -> tuple[tuple[str, str], ...]:
    if not err.details:
        return ()
    return ((DETAILS_KEY, json.dumps(err.details, separators=(",", ":"))),)


def from_rpc_error(exc: grpc.RpcError) -> WeftError:
    """The domain error a failed RPC stands for (details restored from trailing metadata)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    details: dict[str, Any] = {}
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == DETAILS_KEY:
            details = json.loads(value)
    cls = _BY_STATUS.get(code, WeftError)
    if code in (grpc.StatusCode.UNAVAILABLE,):
        cls = Unavailable
    return cls(message or code.name, details=details)
