"""Where the gateway listens: WEFT_HTTP_HOST/PORT, else WEFT_HOST/PORT (what the Helm chart sets)."""

from __future__ import annotations

import pytest

from weft_stream_gateway.settings import GatewaySettings


def test_defaults_are_loopback_8080(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEFT_HOST", "WEFT_PORT", "WEFT_HTTP_HOST", "WEFT_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    s = GatewaySettings()
    assert (s.listen_host(), s.listen_port()) == ("127.0.0.1", 8080)


def test_chart_variables_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEFT_HOST", "0.0.0.0")
    monkeypatch.setenv("WEFT_PORT", "9000")
    monkeypatch.delenv("WEFT_HTTP_HOST", raising=False)
    monkeypatch.delenv("WEFT_HTTP_PORT", raising=False)
    s = GatewaySettings()
    assert (s.listen_host(), s.listen_port()) == ("0.0.0.0", 9000)
    monkeypatch.setenv("WEFT_HTTP_HOST", "127.0.0.2")
    monkeypatch.setenv("WEFT_HTTP_PORT", "0")
    s = GatewaySettings()
    assert (s.listen_host(), s.listen_port()) == ("127.0.0.2", 0)
    monkeypatch.setenv("WEFT_API_TOKENS", "a:b")
    monkeypatch.setenv("WEFT_SSE_HEARTBEAT_S", "2.5")
    s = GatewaySettings()
    assert s.api_tokens == "a:b" and s.sse_heartbeat_s == 2.5


async def test_listening_socket_is_tcp_so_asyncio_disables_nagle(gateway) -> None:  # type: ignore[no-untyped-def]
    import socket

    (listener,) = gateway._server.servers[0].sockets
    # asyncio sets TCP_NODELAY on accepted connections only when the socket's proto is TCP;
    # otherwise every response written in two pieces waits ~40 ms for a delayed ACK.
    assert listener.proto == socket.IPPROTO_TCP
