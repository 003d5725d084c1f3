"""``http``: one HTTP request with templated method, url, headers, query and body (SPEC section 3).

Output ``{status, headers, body}`` (body parsed when the response is JSON). A status outside
``expectStatus`` (default 2xx) fails with ``HTTP_STATUS``; 5xx, 408, 429 and connection errors
are retryable, other 4xx are not. Every request carries ``Idempotency-Key`` (the same on every
attempt and after a crash). Responses are streamed and cut off at
``ExecutorSettings.http_max_response_bytes`` (``RESPONSE_TOO_LARGE``). All connections go through
the SSRF guard in ``netguard`` (``URL_BLOCKED``).

Values that come from ``{{env.*}}`` are sent but never recorded: the node log and error messages
show the template text (``{{env.API_KEY}}``) in their place.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import httpx

from weft_common.jsonutil import dumps, loads
from weft_common.references import TemplateError, compile_template

from .. import netguard
from ..settings import ExecutorSettings
from ._config import config_of, require, settings_of
from .base import NodeContext, NodeFailure, NodeResult, Resolver, register

__all__ = ["HttpHandler", "shared_client"]

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_RETRYABLE_STATUS = frozenset({408, 425, 429})
# How much of a failed response's body an HTTP_STATUS error carries (for error edges).
_ERROR_BODY_LIMIT = 4096

# One guarded client per event loop and allow_private setting, when the engine provides none.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_warned_unguarded = False


def shared_client(settings: ExecutorSettings) -> httpx.AsyncClient:
    """This loop's guarded client for ``settings.allow_private()``."""
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    allow = settings.allow_private()
    client = per_loop.get(allow)
    if client is None or client.is_closed:
        client = netguard.guarded_client(
            allow_private=allow, timeout_s=settings.http_default_timeout_ms / 1000
        )
        per_loop[allow] = client
    return client


def _client(ctx: NodeContext, settings: ExecutorSettings) -> httpx.AsyncClient:
    """The engine's client (``services.http`` or ``services.http_client``) when it is a
    ``netguard.guarded_client``, else this loop's shared guarded one: never an unguarded one."""
    global _warned_unguarded
    unguarded = False
    for name in ("http", "http_client"):
        provided = getattr(ctx.services, name, None)
        if netguard.is_guarded(provided):
            return cast(httpx.AsyncClient, provided)
        unguarded = unguarded or provided is not None
    if unguarded and not _warned_unguarded:
        _warned_unguarded = True
        log.warning(
            "ctx.services carries an httpx client not built by netguard.guarded_client; "
            "http nodes use a guarded one instead"
        )
    return shared_client(settings)


def _uses_env(value: Any) -> bool:
    if not isinstance(value, str) or "{{" not in value:
        return False
    try:
        return any(ref.root == "env" for ref in compile_template(value).references)
    except TemplateError:
        return False


def _render(resolver: Resolver, value: Any) -> tuple[Any, Any]:
    """(the value to send, the value to record): env-derived strings are recorded as templates."""
    if isinstance(value, str):
        rendered = resolver.render(value)
        return rendered, (value if _uses_env(value) else rendered)
    if isinstance(value, Mapping):
        sent: dict[str, Any] = {}
        shown: dict[str, Any] = {}
        for k, v in value.items():
            sent[k], shown[k] = _render(resolver, v)
        return sent, shown
    if isinstance(value, (list, tuple)):
        pairs = [_render(resolver, v) for v in value]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return value, value


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is True or value is False:
        return "true" if value else "false"
    return str(dumps(value))


def _status_expected(status: int, expect: Any) -> bool:
    if expect is None or expect == "":
        return 200 <= status < 300
    items = expect if isinstance(expect, list) else [expect]
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, (int, float)) and int(item) == status:
            return True
        if isinstance(item, str):
            text = item.strip().lower()
            if text.isdigit() and int(text) == status:
                return True
            # "2xx", "4XX"
            if len(text) == 3 and text.endswith("xx") and text[0].isdigit():
                if status // 100 == int(text[0]):
                    return True
    return False


class HttpHandler:
    type: ClassVar[str] = "http"

    async def execute(self, ctx: NodeContext) -> NodeResult:
        config = config_of(ctx)
        settings = settings_of(ctx)
        resolver = ctx.resolver
        node = f"http node {ctx.node.id!r}"

        method = _scalar_text(resolver.render(config.get("method") or "GET")).upper()
        if method not in _METHODS:
            raise _config_error(f"{node}: unsupported method {method!r}")
        url_template = require(ctx, "url")
        url, url_shown = _render(resolver, url_template)
        if not isinstance(url, str) or not url:
            raise _url_error(f"{node}: config.url must render to a URL, got {url_shown!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _url_error(f"{node}: config.url must be an http(s) URL, got {url_shown!r}")
        # What messages may show of the URL: no query (it often carries keys) and no env values.
        where = (
            url_shown if _uses_env(url_template) else f"{parts.scheme}://{parts.netloc}{parts.path}"
        )

        headers, headers_shown = _render(resolver, config.get("headers") or {})
        query, query_shown = _render(resolver, config.get("query") or {})
        body, body_shown = _render(resolver, config.get("body"))
        if not isinstance(headers, dict) or not isinstance(query, dict):
            raise _config_error(f"{node}: config.headers and config.query must be objects")
        send_headers = {str(k): _scalar_text(v) for k, v in headers.items() if v is not None}
        if not any(k.lower() == "idempotency-key" for k in send_headers):
            send_headers["Idempotency-Key"] = ctx.idempotency_key
        params: list[tuple[str, str | int | float | bool | None]] = [
            (str(k), _scalar_text(item))
            for k, v in query.items()
            if v is not None
            for item in (v if isinstance(v, list) else [v])
        ]
        request_kw: dict[str, Any] = {}
        if body is not None:
            if isinstance(body, (dict, list)):
                request_kw["json"] = body
            elif isinstance(body, str):
                request_kw["content"] = body.encode()
            else:
                request_kw["json"] = body
        expect = resolver.render(config.get("expectStatus"))
        follow = config.get("followRedirects", True) is not False
        timeout_ms = ctx.node.timeout_ms or settings.http_default_timeout_ms
        cap = settings.http_max_response_bytes
        recorded = {
            "method": method,
            "url": url_shown,
            "headers": headers_shown,
            "query": query_shown,
            "body": body_shown,
        }

        client = _client(ctx, settings)
        try:
            # httpx's timeout bounds each phase (connect, each read); this bounds the whole
            # request, so a slowly dripping body cannot outlast it either.
            async with asyncio.timeout(timeout_ms / 1000):
                async with client.stream(
                    method,
                    url,
                    headers=send_headers,
                    params=params or None,
                    timeout=timeout_ms / 1000,
                    follow_redirects=follow,
                    **request_kw,
                ) as response:
                    raw = await _read_capped(response, cap, node, where)
        except netguard.BlockedAddressError as exc:
            raise NodeFailure(f"{node}: {exc}", code="URL_BLOCKED", retryable=False) from None
        except (httpx.TimeoutException, TimeoutError):
            raise NodeFailure(
                f"{node}: {method} {where} timed out after {timeout_ms} ms",
                code="TIMEOUT",
            ) from None
        except httpx.TooManyRedirects:
            raise NodeFailure(
                f"{node}: {method} {where}: too many redirects",
                code="HTTP_REDIRECTS",
                retryable=False,
            ) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _url_error(f"{node}: invalid URL {where}: {exc}") from None
        except httpx.TransportError as exc:
            raise NodeFailure(
                f"{node}: {method} {where} failed: {type(exc).__name__}: {exc}",
                code="HTTP_CONNECTION",
            ) from None

        status = response.status_code
        parsed = _parse_body(response, raw)
        output = {"status": status, "headers": _headers(response.headers), "body": parsed}
        if not _status_expected(status, expect):
            raise NodeFailure(
                f"{node}: {method} {where} returned HTTP {status}",
                code="HTTP_STATUS",
                status=status,
                details={"body": _error_body(parsed, raw)},
                retryable=status >= 500 or status in _RETRYABLE_STATUS,
            )
        return NodeResult(output=output, input=recorded)


def _config_error(message: str) -> NodeFailure:
    return NodeFailure(message, code="CONFIG_INVALID", retryable=False)


def _url_error(message: str) -> NodeFailure:
    return NodeFailure(message, code="URL_INVALID", retryable=False)


async def _read_capped(response: httpx.Response, cap: int, node: str, where: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(node, where, cap)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _too_large(node, where, cap)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(node: str, where: str, cap: int) -> NodeFailure:
    return NodeFailure(
        f"{node}: the response from {where} is larger than {cap} bytes "
        "(WEFT_HTTP_MAX_RESPONSE_BYTES)",
        code="RESPONSE_TOO_LARGE",
        retryable=False,
    )


def _parse_body(response: httpx.Response, raw: bytes) -> Any:
    if not raw:
        return None
    ctype = response.headers.get("content-type", "").lower()
    if "json" in ctype:
        try:
            return loads(raw)
        except ValueError:
            pass
    return raw.decode(response.encoding or "utf-8", errors="replace")


def _headers(headers: httpx.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.multi_items():
        key = key.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _error_body(parsed: Any, raw: bytes) -> Any:
    if len(raw) <= _ERROR_BODY_LIMIT:
        return parsed
    return raw[:_ERROR_BODY_LIMIT].decode("utf-8", errors="replace")


register(HttpHandler())
