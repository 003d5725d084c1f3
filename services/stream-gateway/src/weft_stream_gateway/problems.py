"""``application/problem+json`` (RFC 9457): every error the HTTP API answers with."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from weft_common.errors import WeftError

__all__ = ["HttpProblem", "JsonResponse", "problem_response", "weft_error_response"]

PROBLEM_TYPE_BASE = "https://weft.dev/problems/"


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class HttpProblem(Exception):
    """An HTTP-level error raised by a route (bad JSON, a bad header, ...)."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug if slug else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(
        orjson.dumps(body), status_code=status, headers=headers,
        media_type="application/problem+json",
    )


def weft_error_response(request: Request, exc: WeftError) -> Response:
    diagnostics = exc.details.get("diagnostics") if isinstance(exc.details, dict) else None
    if diagnostics is not None and exc.http_status == 422:
        return problem_response(
            422, exc.message, slug="invalid-workflow", title="Invalid workflow",
            instance=request.url.path, diagnostics=diagnostics,
        )
    headers = {"www-authenticate": 'Bearer realm="weft"'} if exc.http_status == 401 else None
    return problem_response(
        exc.http_status, exc.message, instance=request.url.path, headers=headers,
        code=exc.status.name,
    )
