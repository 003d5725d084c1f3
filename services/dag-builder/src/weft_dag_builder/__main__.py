"""``python -m weft_dag_builder``: read the settings once, serve until SIGTERM."""

from __future__ import annotations

import asyncio

from weft_common.grpc_server import run_until_signal
from weft_common.logging_setup import setup_logging
from weft_common.telemetry import setup_telemetry

from .server import DagBuilderService
from .settings import DagBuilderSettings


def main() -> None:
    settings = DagBuilderSettings()
    setup_logging(settings.log_level, json_lines=settings.log_json, service="dag-builder")
    setup_telemetry("weft-dag-builder", settings)

    async def run() -> None:
        service = DagBuilderService(settings)
        await run_until_signal(service.start, service.stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
