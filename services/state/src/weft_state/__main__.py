"""``python -m weft_state``: the state service until SIGTERM."""

from __future__ import annotations

import asyncio

from weft_common.grpc_server import run_until_signal
from weft_common.logging_setup import setup_logging
from weft_common.telemetry import setup_telemetry

from .server import RunningStateService, serve
from .settings import StateSettings


def main() -> None:
    settings = StateSettings()
    setup_logging(settings.log_level, json_lines=settings.log_json, service="state")
    setup_telemetry(
        "weft-state",
        settings,
        libraries=("sqlalchemy", "redis") if settings.redis_url else ("sqlalchemy",),
    )
    running: list[RunningStateService] = []

    async def start() -> None:
        running.append(await serve(settings))

    async def stop() -> None:
        for service in running:
            await service.stop()

    asyncio.run(run_until_signal(start, stop))


if __name__ == "__main__":
    main()
