"""The ``http`` handler against a real local HTTP server: templating, statuses, retries-relevant
errors, Idempotency-Key, timeouts, cancellation and the response size cap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.http_server import HttpTestServer

from weft_common.compiled import CompiledNode
from weft_executor.handlers.base import HANDLERS, NodeContext, NodeFailure, NodeResult
from weft_executor.resolve import ReferenceResolver
from weft_executor.settings import ExecutorSettings

ALLOW_LOOPBACK = ExecutorSettings.model_construct(http_allow_private=True)


@pytest.fixture(scope="module")
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as srv:
        yield srv


def http_ctx(
    config: dict[str, Any],
    roots: dict[str, Any] | None = None,
    *,
    settings: ExecutorSettings = ALLOW_LOOPBACK,
    timeout_ms: int = 0,
    environ: dict[str, str] | None = None,
    env_allow: tuple[str, ...] = (),
    key: str = "ex-1:call",
    http: Any = None,
) -> NodeContext:
    data = dict(roots or {})
    resolver = ReferenceResolver(
        lambda k: data[k], execution_id="ex-1", env_allow=env_allow, environ=environ or {}
    )
    services = SimpleNamespace(settings=settings)
    if http is not None:
        services.http = http
    return NodeContext(
        execution_id="ex-1",
        node=CompiledNode(id="call", type="http", config=config, timeout_ms=timeout_ms),
        scope=(),
        attempt=1,
        resolver=resolver,
        idempotency_key=key,
        emit_chunk=lambda _c: None,
        services=services,
    )


async def run(ctx: NodeContext) -> NodeResult:
    return await HANDLERS["http"].execute(ctx)


async def test_post_with_templated_json_body_keeps_types(server: HttpTestServer) -> None:
    config = {
        "method": "POST",
        "url": server.url("/echo"),
        "body": {"name": "{{start.name}}", "n": "{{start.n}}", "tags": ["{{start.n}}", "x"]},
    }
    res = await run(http_ctx(config, {"input": {"name": "Ada", "n": 3}}))
    out = res.output
    assert out["status"] == 200
    assert out["body"]["method"] == "POST"
    assert out["body"]["body"] == {"name": "Ada", "n": 3, "tags": [3, "x"]}
    assert out["headers"]["content-type"] == "application/json"
    assert res.handles == ("out",)


async def test_templated_url_headers_and_query(server: HttpTestServer) -> None:
    config = {
        "method": "get",
        "url": server.base_url + "/echo",
        "headers": {
            "X-Order": "{{start.id}}",
            "X-Json": "{{start.obj}}",
            "X-Text": "id-{{start.id}}",
        },
        "query": {"q": "{{start.id}}", "flag": True, "many": ["a", "{{start.id}}"], "none": None},
    }
    res = await run(http_ctx(config, {"input": {"id": 42, "obj": {"a": 1}}}))
    body = res.output["body"]
    assert body["method"] == "GET"
    assert body["headers"]["x-order"] == "42"
    assert body["headers"]["x-json"] == '{"a":1}'
    assert body["headers"]["x-text"] == "id-42"
    assert body["queryAll"] == {"q": ["42"], "flag": ["true"], "many": ["a", "42"]}
    assert res.input["query"] == {"q": 42, "flag": True, "many": ["a", 42], "none": None}


async def test_idempotency_key_is_sent_on_every_attempt(server: HttpTestServer) -> None:
    config = {"url": server.url("/flaky/idem?fail=1")}
    with pytest.raises(NodeFailure):
        await run(http_ctx(config, key="exec-7:fetch"))
    await run(http_ctx(config, key="exec-7:fetch"))
    flaky = [r for r in server.requests if r.path == "/flaky/idem"]
    assert [r.headers.get("Idempotency-Key") for r in flaky] == ["exec-7:fetch", "exec-7:fetch"]
    assert server.idempotency_keys.count("exec-7:fetch") == 2


async def test_a_user_idempotency_key_header_wins(server: HttpTestServer) -> None:
    config = {"url": server.url("/echo"), "headers": {"idempotency-key": "mine-{{execution.id}}"}}
    res = await run(http_ctx(config))
    assert res.output["body"]["idempotencyKey"] == "mine-ex-1"


async def test_flaky_upstream_fails_retryably_then_succeeds(server: HttpTestServer) -> None:
    config = {"url": server.url("/flaky/three?fail=2")}
    for attempt in (1, 2):
        with pytest.raises(NodeFailure) as info:
            await run(http_ctx(config))
        assert info.value.code == "HTTP_STATUS" and info.value.status == 503
        assert info.value.retryable is True, attempt
    res = await run(http_ctx(config))
    assert res.output["body"] == {"ok": True, "attempts": 3}


@pytest.mark.parametrize(
    ("code", "retryable"),
    [(400, False), (404, False), (408, True), (429, True), (500, True), (502, True)],
)
async def test_status_outside_2xx_fails_with_http_status(
    server: HttpTestServer, code: int, retryable: bool
) -> None:
    with pytest.raises(NodeFailure) as info:
        await run(http_ctx({"url": server.url(f"/status?code={code}")}))
    err = info.value
    assert err.code == "HTTP_STATUS"
    assert err.status == code
    assert str(code) in err.message
    assert err.retryable is retryable
    assert err.to_error("call")["status"] == code
    assert err.details == {"body": {"code": code}}


@pytest.mark.parametrize(
    ("expect", "code", "ok"),
    [
        (404, 404, True),
        ([200, 404], 404, True),
        ([200, 201], 404, False),
        ("4xx", 418, True),
        (["2xx", 302], 302, True),
        (201, 200, False),
    ],
)
async def test_expect_status(server: HttpTestServer, expect: Any, code: int, ok: bool) -> None:
    config = {
        "url": server.url(f"/status?code={code}"),
        "expectStatus": expect,
        "followRedirects": False,
    }
    if ok:
        res = await run(http_ctx(config))
        assert res.output["status"] == code
    else:
        with pytest.raises(NodeFailure) as info:
            await run(http_ctx(config))
        assert info.value.code == "HTTP_STATUS" and info.value.status == code


async def test_non_json_body_is_text_and_headers_are_lowercased(server: HttpTestServer) -> None:
    res = await run(http_ctx({"url": server.url("/text")}))
    assert res.output["body"] == "hello"
    assert res.output["headers"]["content-type"].startswith("text/plain")
    res = await run(http_ctx({"url": server.url("/headers?X-Custom=v1")}))
    assert res.output["headers"]["x-custom"] == "v1"


async def test_redirects_are_followed(server: HttpTestServer) -> None:
    to = server.url("/echo?from=redirect")
    res = await run(http_ctx({"url": server.url(f"/redirect?to={to}")}))
    assert res.output["status"] == 200
    assert res.output["body"]["query"] == {"from": "redirect"}


async def test_timeout_bounds_the_request(server: HttpTestServer) -> None:
    started = time.perf_counter()
    with pytest.raises(NodeFailure) as info:
        await run(http_ctx({"url": server.url("/delay?ms=3000")}, timeout_ms=200))
    assert info.value.code == "TIMEOUT"
    assert info.value.retryable is True
    assert time.perf_counter() - started < 2


async def test_the_handler_is_cancellable_mid_request(server: HttpTestServer) -> None:
    task = asyncio.create_task(run(http_ctx({"url": server.url("/delay?ms=5000")})))
    while server.hits("/delay") == 0:  # noqa: ASYNC110 (the server runs in another thread)
        await asyncio.sleep(0.01)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_response_size_is_capped(server: HttpTestServer, chunked: bool) -> None:
    settings = ExecutorSettings.model_construct(
        http_allow_private=True, http_max_response_bytes=100_000
    )
    flag = "&chunked=1" if chunked else ""
    with pytest.raises(NodeFailure) as info:
        await run(http_ctx({"url": server.url(f"/large?bytes=5000000{flag}")}, settings=settings))
    assert info.value.code == "RESPONSE_TOO_LARGE"
    assert info.value.retryable is False
    ok = await run(http_ctx({"url": server.url(f"/large?bytes=90000{flag}")}, settings=settings))
    assert len(ok.output["body"]) == 90000


async def test_env_values_are_sent_but_not_recorded(server: HttpTestServer) -> None:
    secret = "tok-9f8e7d"
    config = {
        "url": server.url("/echo"),
        "headers": {"Authorization": "Bearer {{env.API_TOKEN}}"},
        "query": {"key": "{{env.API_TOKEN}}"},
    }
    res = await run(http_ctx(config, environ={"API_TOKEN": secret}, env_allow=("API_TOKEN",)))
    assert res.output["body"]["headers"]["authorization"] == f"Bearer {secret}"
    assert secret not in repr(res.input)
    assert res.input["headers"] == {"Authorization": "Bearer {{env.API_TOKEN}}"}


async def test_error_messages_leave_out_the_query_and_env_values(server: HttpTestServer) -> None:
    with pytest.raises(NodeFailure) as info:
        await run(http_ctx({"url": server.url("/status?code=500&apikey=hunter2")}))
    assert "hunter2" not in info.value.message and "/status" in info.value.message
    with pytest.raises(NodeFailure) as env_info:
        await run(
            http_ctx(
                {"url": "{{env.BASE}}/status?code=500"},
                environ={"BASE": server.base_url},
                env_allow=("BASE",),
            )
        )
    assert server.base_url not in env_info.value.message
    assert "{{env.BASE}}" in env_info.value.message


async def test_disallowed_env_in_a_header_fails_before_any_request(server: HttpTestServer) -> None:
    before = len(server.requests)
    with pytest.raises(NodeFailure) as info:
        await run(
            http_ctx(
                {"url": server.url("/echo"), "headers": {"A": "{{env.SECRET}}"}},
                environ={"SECRET": "zzz"},
            )
        )
    assert info.value.code == "ENV_NOT_ALLOWED"
    assert len(server.requests) == before


async def test_bad_urls_and_methods_fail_without_retry() -> None:
    for config, code in (
        ({"url": "ftp://example.com/x"}, "URL_INVALID"),
        ({"url": "{{start.nothing}}"}, "URL_INVALID"),
        ({"url": "http://127.0.0.1/", "method": "BREW"}, "CONFIG_INVALID"),
        ({}, "CONFIG_INVALID"),
    ):
        with pytest.raises(NodeFailure) as info:
            await run(http_ctx(config))
        assert (info.value.code, info.value.retryable) == (code, False), config


async def test_connection_refused_is_retryable() -> None:
    # A port that was free a moment ago: nothing listens there.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NodeFailure) as info:
        await run(http_ctx({"url": f"http://127.0.0.1:{port}/"}))
    assert info.value.code == "HTTP_CONNECTION" and info.value.retryable is True


async def test_the_timeout_bounds_the_whole_request_not_each_read(server: HttpTestServer) -> None:
    # A byte every 100 ms never trips a 400 ms per-read timeout; 20 of them take 2 s in all.
    started = time.perf_counter()
    with pytest.raises(NodeFailure) as info:
        await run(http_ctx({"url": server.url("/drip?chunks=20&delay_ms=100")}, timeout_ms=400))
    assert info.value.code == "TIMEOUT"
    assert time.perf_counter() - started < 1.5
    res = await run(http_ctx({"url": server.url("/drip?chunks=3&delay_ms=20")}, timeout_ms=2000))
    assert res.output["body"] == "xxx"
