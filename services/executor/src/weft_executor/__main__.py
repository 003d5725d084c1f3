"""``python -m weft_executor``: read the settings once, run the executor until SIGTERM."""

from __future__ import annotations

import asyncio

from weft_common.grpc_server import run_until_signal
from weft_common.logging_setup import setup_logging
from weft_common.telemetry import setup_telemetry

from .server import ExecutorService
from .settings import ExecutorSettings


def main() -> None:
    settings = ExecutorSettings()
    setup_logging(settings.log_level, json_lines=settings.log_json, service="executor")
    setup_telemetry("weft-executor", settings)

    async def run() -> None:
        service = ExecutorService(settings)
        await run_until_signal(service.start, service.stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
