"""The SSRF guard: address classification, and real requests that it refuses or lets through."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from helpers.http_server import HttpTestServer, make_certificates

from weft_common.compiled import CompiledNode
from weft_executor import netguard
from weft_executor.handlers.base import HANDLERS, NodeContext, NodeFailure, NodeResult
from weft_executor.resolve import ReferenceResolver
from weft_executor.settings import ExecutorSettings

PRIVATE_OK = ExecutorSettings.model_construct(http_allow_private=True)
PUBLIC_ONLY = ExecutorSettings.model_construct(http_allow_private=False)


@pytest.fixture(scope="module")
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as srv:
        yield srv


def ctx(url: str, settings: ExecutorSettings, http: Any = None) -> NodeContext:
    services = SimpleNamespace(settings=settings)
    if http is not None:
        services.http = http
    return NodeContext(
        execution_id="ex",
        node=CompiledNode(id="call", type="http", config={"url": url}),
        scope=(),
        attempt=1,
        resolver=ReferenceResolver(lambda k: {}[k], execution_id="ex", env_allow=()),
        idempotency_key="ex:call",
        emit_chunk=lambda _c: None,
        services=services,
    )


async def run(c: NodeContext) -> NodeResult:
    return await HANDLERS["http"].execute(c)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.1.1",
        "fe80::1",
        "fd00:ec2::254",
        "100.100.100.200",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
    ],
)
def test_metadata_and_link_local_are_always_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert netguard.address_problem(ip, allow_private=True) is not None
    assert netguard.address_problem(ip, allow_private=False) is not None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "240.0.0.1",
        "::",
    ],
)
def test_private_ranges_are_refused_unless_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert netguard.address_problem(ip, allow_private=False) is not None
    assert netguard.address_problem(ip, allow_private=True) is None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    # Classification only: no traffic goes anywhere.
    assert netguard.address_problem(ipaddress.ip_address(address), allow_private=False) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
async def test_metadata_urls_are_refused_even_with_allow_private(url: str) -> None:
    with pytest.raises(NodeFailure) as info:
        await run(ctx(url, PRIVATE_OK))
    assert info.value.code == "URL_BLOCKED"
    assert info.value.retryable is False
    assert "call" in info.value.message


async def test_loopback_is_refused_without_allow_private(server: HttpTestServer) -> None:
    before = len(server.requests)
    for url in (server.url("/echo"), f"http://[::1]:{server.port}/echo"):
        with pytest.raises(NodeFailure) as info:
            await run(ctx(url, PUBLIC_ONLY))
        assert info.value.code == "URL_BLOCKED"
        assert "WEFT_HTTP_ALLOW_PRIVATE" in info.value.message
    assert len(server.requests) == before


async def test_loopback_is_allowed_with_allow_private(server: HttpTestServer) -> None:
    res = await run(ctx(server.url("/echo"), PRIVATE_OK))
    assert res.output["status"] == 200


async def test_a_hostname_resolving_to_a_private_address_is_refused(server: HttpTestServer) -> None:
    before = len(server.requests)
    with pytest.raises(NodeFailure) as info:
        await run(ctx(f"http://localhost:{server.port}/echo", PUBLIC_ONLY))
    assert info.value.code == "URL_BLOCKED"
    assert "'localhost'" in info.value.message
    assert "127.0.0.1" not in info.value.message  # the host is named, not what it resolved to
    assert len(server.requests) == before


async def test_redirect_to_metadata_is_refused(server: HttpTestServer) -> None:
    url = server.url("/redirect?to=http://169.254.169.254/latest/meta-data/")
    with pytest.raises(NodeFailure) as info:
        await run(ctx(url, PRIVATE_OK))
    assert info.value.code == "URL_BLOCKED"


async def test_connects_to_the_vetted_address_and_resolves_once(server: HttpTestServer) -> None:
    # "rebind.invalid" exists in no DNS: the request can only succeed by connecting to the
    # address our resolver vetted, which shows the name is never resolved a second time.
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    client = netguard.guarded_client(allow_private=True, resolve=resolve)
    try:
        res = await run(ctx(f"http://rebind.invalid:{server.port}/echo", PRIVATE_OK, http=client))
        assert res.output["status"] == 200
        assert res.output["body"]["headers"]["host"] == f"rebind.invalid:{server.port}"
        assert calls == ["rebind.invalid"]
    finally:
        await client.aclose()


async def test_any_refused_answer_refuses_the_name(server: HttpTestServer) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "169.254.169.254"]

    client = netguard.guarded_client(allow_private=True, resolve=resolve)
    try:
        with pytest.raises(NodeFailure) as info:
            await run(ctx(f"http://mixed.invalid:{server.port}/echo", PRIVATE_OK, http=client))
        assert info.value.code == "URL_BLOCKED"
        assert "mixed.invalid" in info.value.message
        assert "169.254" not in info.value.message
    finally:
        await client.aclose()


async def test_guarded_client_refuses_outside_the_handler_too() -> None:
    client = netguard.guarded_client(allow_private=True)
    try:
        with pytest.raises(netguard.BlockedAddressError):
            await client.get("http://169.254.169.254/")
    finally:
        await client.aclose()


async def test_an_unguarded_services_client_is_not_used(server: HttpTestServer) -> None:
    plain = httpx.AsyncClient()
    try:
        with pytest.raises(NodeFailure) as info:
            await run(ctx(server.url("/echo"), PUBLIC_ONLY, http=plain))
        assert info.value.code == "URL_BLOCKED"
    finally:
        await plain.aclose()


async def test_tls_verifies_the_url_host_while_connecting_to_the_pinned_address(
    tmp_path: Path,
) -> None:
    # The certificate is valid for "pinned.test" only; the socket goes to 127.0.0.1 (what the
    # resolver vetted). Success means SNI and verification used the host name, not the address.
    certs = make_certificates(tmp_path, "pinned.test")

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with HttpTestServer(tls=certs.server_context()) as tls_server:
        client = netguard.guarded_client(
            allow_private=True, resolve=resolve, verify=certs.client_context()
        )
        try:
            ok = await run(ctx(f"https://pinned.test:{tls_server.port}/echo", PRIVATE_OK, client))
            assert ok.output["status"] == 200
            assert ok.output["body"]["headers"]["host"] == f"pinned.test:{tls_server.port}"
            # The same server by address: the certificate does not cover it, so TLS fails.
            with pytest.raises(NodeFailure) as info:
                await run(ctx(f"https://127.0.0.1:{tls_server.port}/echo", PRIVATE_OK, client))
            assert info.value.code == "HTTP_CONNECTION"
            assert "CERTIFICATE_VERIFY_FAILED" in info.value.message
        finally:
            await client.aclose()
