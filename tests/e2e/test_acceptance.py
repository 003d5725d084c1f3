"""The shared acceptance suite, played through the gateway against `weft up`, on the embedded
default (SQLite, in-process bus) and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from helpers.db import REDIS_URL

from .weft_up import free_port

REPO = Path(__file__).resolve().parents[2]
WEFT = Path(sys.executable).parent / "weft"
pytestmark = pytest.mark.timeout(900)


def runner() -> Path:
    for shared in (REPO.parent / "shared", Path("/work/shared")):
        path = shared / "acceptance" / "run.py"
        if path.exists():
            return path
    raise AssertionError("shared/acceptance/run.py not found beside the repository")


async def play(tmp_path: Path, env: dict[str, str]) -> str:
    port = free_port()
    start = f"{WEFT} up --http-port {port} --data-dir {tmp_path / 'data'}"
    proc = await asyncio.create_subprocess_exec(
        "python3", str(runner()), "--start", start, "--base-url", f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env, "WEFT_LOG_LEVEL": "WARNING"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 850)
    return out.decode()


def assert_all_passed(output: str) -> None:
    summary = re.findall(r"^(\d+) passed, (\d+) failed$", output, re.MULTILINE)
    assert summary, output[-3000:]
    passed, failed = map(int, summary[-1])
    failures = [line for line in output.splitlines() if line.startswith("FAIL ")]
    assert failed == 0 and passed > 0, "\n".join(failures) or output[-3000:]


async def test_acceptance_on_the_embedded_default(tmp_path: Path) -> None:
    assert_all_passed(await play(tmp_path, {}))


async def test_acceptance_on_postgres_and_redis(tmp_path: Path, postgres_database_url: str,
                                                redis_prefix: str) -> None:
    output = await play(tmp_path, {"WEFT_DATABASE_URL": postgres_database_url,
                                   "WEFT_REDIS_URL": REDIS_URL, "WEFT_REDIS_PREFIX": redis_prefix})
    assert "events redis" in output and "postgresql+asyncpg" in output
    assert_all_passed(output)
