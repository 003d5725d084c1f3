"""`weft up` as a separate process, the way users run it: start, wait for /readyz, stop with a
signal and collect the exit code and output."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

WEFT = Path(sys.executable).parent / "weft"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WeftUp:
    def __init__(self, data_dir: Path, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.log = data_dir / f"weft-up-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ready_within: float = 90) -> WeftUp:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(WEFT), "up", "--http-port", str(self.port), "--data-dir", str(self.data_dir),
                stdout=log, stderr=log, env=self.env,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_within
        async with httpx.AsyncClient() as c:
            while loop.time() < deadline:
                if self.proc.returncode is not None:
                    raise AssertionError(f"weft up exited {self.proc.returncode}:\n{self.log.read_text()}")
                try:
                    if (await c.get(self.url + "/readyz", timeout=2)).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"weft up not ready in {ready_within}s:\n{self.log.read_text()}")

    async def stop(self, sig: int = signal.SIGTERM, within: float = 60) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), within)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                tail = self.log.read_text()[-6000:]
                raise AssertionError(f"weft up did not stop within {within}s after {sig}:\n{tail}") from None
        return int(self.proc.returncode or 0)
