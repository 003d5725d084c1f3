"""``python -m weft_stream_gateway``: settings once, then serve until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from weft_common.grpc_server import run_until_signal
from weft_common.logging_setup import setup_logging
from weft_common.telemetry import setup_telemetry

from .auth import ExposureError
from .server import RunningGateway, serve
from .settings import GatewaySettings


async def _run(settings: GatewaySettings) -> None:
    running: list[RunningGateway] = []

    async def start() -> None:
        running.append(await serve(settings))

    async def stop() -> None:
        for r in running:
            await r.stop()

    await run_until_signal(start, stop)


def main() -> None:
    settings = GatewaySettings()
    setup_logging(settings.log_level, json_lines=settings.log_json, service="stream-gateway")
    setup_telemetry("weft-stream-gateway", settings)
    try:
        asyncio.run(_run(settings))
    except ExposureError as exc:
        print(f"weft-stream-gateway: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
