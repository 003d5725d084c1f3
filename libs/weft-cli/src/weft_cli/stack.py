"""The embedded stack: all four services in this process, wired to each other over loopback gRPC.

Defaults are the embedded mode of SPEC section 7: a SQLite file under the data dir, the in-process
event bus, everything bound to 127.0.0.1, private addresses allowed for ``http``/``llm`` nodes.
``WEFT_DATABASE_URL`` / ``WEFT_REDIS_URL`` (read by each service's settings) switch it to
PostgreSQL + Redis.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weft_common.grpc_server import RunningService

__all__ = ["EmbeddedStack", "start_stack"]

log = logging.getLogger("weft.up")

LOOPBACK = "127.0.0.1"


@dataclass
class EmbeddedStack:
    """Started services, stopped in reverse order (gateway first, state last)."""

    http_port: int
    data_dir: Path
    database_url: str
    services: list[tuple[str, RunningService]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def ports(self) -> dict[str, int]:
        return {name: svc.port for name, svc in self.services}

    async def stop(self) -> None:
        while self.services:
            name, svc = self.services.pop()
            started = time.perf_counter()
            try:
                await svc.stop()
            except Exception:
                log.exception("stopping %s failed", name)
            log.info("%s stopped in %.2f s", name, time.perf_counter() - started)


async def start_stack(*, http_port: int = 8080, data_dir: str | Path = ".weft",
                      **overrides: Any) -> EmbeddedStack:
    """Start state, dag-builder, executor and gateway (gRPC on free loopback ports)."""
    # Imported here: `weft` commands that talk to a remote gateway never load the services.
    from weft_dag_builder.server import serve as serve_dag_builder
    from weft_dag_builder.settings import DagBuilderSettings
    from weft_executor.server import serve as serve_executor
    from weft_executor.settings import ExecutorSettings
    from weft_state.server import serve as serve_state
    from weft_state.settings import StateSettings
    from weft_stream_gateway.server import serve as serve_gateway
    from weft_stream_gateway.settings import GatewaySettings

    data = _prepare_data_dir(data_dir)
    common: dict[str, Any] = {"embedded": True, "data_dir": str(data), "host": LOOPBACK, **overrides}
    stack = EmbeddedStack(http_port=0, data_dir=data, database_url="")
    try:
        state = await serve_state(StateSettings(**common, port=0))
        stack.services.append(("state", state))
        stack.database_url = _redact(StateSettings(**common).resolved_database_url())
        addrs: dict[str, Any] = {"state_addr": f"{LOOPBACK}:{state.port}"}
        dag_builder = await serve_dag_builder(DagBuilderSettings(**common, **addrs, port=0))
        stack.services.append(("dag-builder", dag_builder))
        addrs["dag_builder_addr"] = f"{LOOPBACK}:{dag_builder.port}"
        executor = await serve_executor(ExecutorSettings(**common, **addrs, port=0))
        stack.services.append(("executor", executor))
        addrs["executor_addr"] = f"{LOOPBACK}:{executor.port}"
        gateway = await serve_gateway(
            GatewaySettings(**common, **addrs, http_host=LOOPBACK, http_port=http_port)
        )
        stack.services.append(("gateway", gateway))
        stack.http_port = gateway.port
    except BaseException:
        await stack.stop()
        raise
    return stack


def _prepare_data_dir(data_dir: str | Path) -> Path:
    data = Path(data_dir).expanduser().resolve()
    data.mkdir(parents=True, exist_ok=True)
    return data


def _redact(url: str) -> str:
    """A database URL without its password, for the banner."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
