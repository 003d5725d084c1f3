"""The real PostgreSQL server restarted mid-run (``pg_ctlcluster ... restart``): executions finish,
their logs stay contiguous, live streams deliver every event.

This restarts the machine's shared PostgreSQL, so it is marked ``pg_restart`` and runs only when
asked for: ``pytest -m pg_restart`` (or ``WEFT_TEST_PG_RESTART=1``); see this directory's
``conftest.py``. Running the directory or the whole suite must not restart a server that other
people's tests are using. Before restarting it waits (up to a minute) for a moment when no other
client runs a query. ``test_outages.py`` covers the same failure through a proxy, always.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import asyncpg
import pytest
from executor_support import Backends, check_log, outputs, start_stack
from helpers.db import PG_ADMIN_DSN
from test_outages import waits_chain

pytestmark = [pytest.mark.pg_restart, pytest.mark.postgres, pytest.mark.timeout(240)]


def _cluster_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql"))
    assert versions, "no PostgreSQL cluster under /etc/postgresql"
    return versions[-1]


async def _wait_until_quiet(database: str, within_s: float = 60.0) -> None:
    """Until no client of another database runs a query (best effort)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND state = 'active' AND pid <> pg_backend_pid() AND datname <> $1",
                database,
            )
        finally:
            await conn.close()
        if not busy:
            return
        await asyncio.sleep(0.5)


async def _restart_postgres() -> float:
    """Restart the cluster; returns how long the server was down (seconds)."""
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", "--skip-systemctl-redirect", _cluster_version(), "main", "restart",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    while True:
        try:
            conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=2)
            await conn.close()
            return time.monotonic() - t0
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.1)


async def test_postgres_restarted_mid_run(executor_backends: Backends) -> None:
    assert shutil.which("pg_ctlcluster"), "pg_ctlcluster is needed to restart PostgreSQL"
    backend = await executor_backends.new("postgres")
    stack = await start_stack(backend, lease_ms=4000, heartbeat_ms=400)
    try:
        ids = [
            (await stack.start(waits_chain(12, 250), {"tag": f"run{i}"})).execution_id
            for i in range(6)
        ]
        live = [asyncio.create_task(stack.events(execution_id)) for execution_id in ids]
        await asyncio.sleep(0.8)
        await _wait_until_quiet(backend.database_url.rsplit("/", 1)[-1])
        down_s = await _restart_postgres()
        streams = await asyncio.wait_for(asyncio.gather(*live), timeout=90)
        for i, execution_id in enumerate(ids):
            done = await stack.wait_status(execution_id, "SUCCEEDED", "FAILED", within=60)
            assert outputs(done) == {"out": f"run{i}"}, done.error
            check_log(streams[i])
            assert len(streams[i]) == done.last_seq
            assert [e["nodeId"] for e in streams[i] if e["type"] == "node:completed"] == [
                "start", *[f"w{n}" for n in range(12)], "out",
            ]
        print(f"PostgreSQL was restarted in {down_s:.1f}s; every execution finished")
    finally:
        await stack.stop()
