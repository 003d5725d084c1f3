"""Where CLI commands send their requests: the gateway at ``--url``, or, when no URL was given and
nothing listens at the default, an embedded stack started in this process for the command."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .api import ApiClient

if TYPE_CHECKING:
    from .stack import EmbeddedStack

__all__ = ["DEFAULT_URL", "Target", "connect"]

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class Target:
    url: str | None
    token: str | None
    data_dir: str
    quiet: bool = False


@contextlib.asynccontextmanager
async def connect(target: Target, *, embedded_fallback: bool = True) -> AsyncIterator[tuple[ApiClient, EmbeddedStack | None]]:
    url = target.url or os.environ.get("WEFT_URL") or DEFAULT_URL
    api = ApiClient(url, target.token or os.environ.get("WEFT_TOKEN"))
    stack: EmbeddedStack | None = None
    try:
        if embedded_fallback and target.url is None and not os.environ.get("WEFT_URL") and not await api.alive():
            from .stack import start_stack

            await api.aclose()
            logging.getLogger().setLevel(logging.WARNING)
            stack = await start_stack(http_port=0, data_dir=target.data_dir)
            if not target.quiet:
                print(f"weft: nothing listens at {url}; started an embedded stack for this command "
                      f"(data in {stack.data_dir})", file=sys.stderr)
            api = ApiClient(stack.url, target.token or os.environ.get("WEFT_TOKEN"))
        yield api, stack
    finally:
        await api.aclose()
        if stack is not None:
            await stack.stop()
