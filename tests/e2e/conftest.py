"""The real embedded stack (all four services in this process, SQLite in a temp dir) for
end-to-end tests through the HTTP gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from weft_cli.stack import EmbeddedStack, start_stack


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStack]:
    data: Path = tmp_path_factory.mktemp("weft-e2e")
    # The LLM example reads its endpoint from WEFT_LLM_* (tests set them with monkeypatch).
    running = await start_stack(http_port=0, data_dir=data, http_allow_private=True, env_allow="WEFT_LLM_")
    yield running
    await running.stop()


@pytest.fixture
async def api(stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        yield client
