"""Process-wide switches read on hot paths: is tracing on, are metrics on.

Kept in their own tiny module so the span helpers, interceptors and logging can check one
attribute without importing the SDK. Only ``telemetry.setup_telemetry`` and the test hook flip them.
"""

from __future__ import annotations

__all__ = ["flags"]


class _Flags:
    __slots__ = ("metrics", "tracing")

    def __init__(self) -> None:
        self.tracing = False
        self.metrics = False


flags = _Flags()
