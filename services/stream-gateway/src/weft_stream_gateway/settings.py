"""Stream gateway settings: ``WEFT_*`` environment variables, read once in ``__main__``."""

from __future__ import annotations

from weft_common.settings import CommonSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(CommonSettings):
    # Where the HTTP API listens: WEFT_HTTP_HOST / WEFT_HTTP_PORT, else WEFT_HOST / WEFT_PORT like
    # every service (the Helm chart sets those); default 127.0.0.1:8080. Port 0 picks a free one.
    http_host: str = ""
    http_port: int | None = None
    port: int = 8080
    # Comma list of bearer tokens; an entry may be ``name:token`` to give the token a readable
    # identity (the ``owner`` of what it creates). Empty: open, allowed only on loopback in
    # embedded mode.
    api_tokens: str = ""
    # Seconds between SSE heartbeat comments while a stream is idle.
    sse_heartbeat_s: float = 15.0
    # SSE ``retry:`` hint sent to browsers (ms before they reconnect).
    sse_retry_ms: int = 1000
    # Deadline of one unary call to an upstream service.
    upstream_timeout_s: float = 30.0
    # Largest request body accepted (413 above it).
    http_max_body_bytes: int = 16 * 1024 * 1024
    # Seconds uvicorn waits for open connections (streams) when stopping.
    http_shutdown_grace_s: float = 2.0
    # CORS: comma list of origins allowed to call the API from a browser ("*": any; empty: none).
    http_cors_origins: str = "*"

    def listen_host(self) -> str:
        return self.http_host or self.host

    def listen_port(self) -> int:
        return self.port if self.http_port is None else self.http_port
