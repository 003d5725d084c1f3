"""One logging setup for every service: plain text for people, JSON lines for machines.

Every record is stamped with the ids that let an operator join logs to traces and executions:
the current OpenTelemetry ``trace_id``/``span_id`` (when a span is recording) and the
``execution_id``/``node_id`` the engine put in context (``log_context``, the telemetry span
helpers, which set them for the span's duration, or the engine around each node attempt through
``LOG_IDS``, whatever the telemetry). ``WEFT_LOG_JSON=true`` turns JSON on.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

import orjson
from opentelemetry import trace

__all__ = [
    "LOG_IDS",
    "ContextFilter",
    "JsonFormatter",
    "current_log_ids",
    "log_context",
    "setup_logging",
]

# (execution_id, node_id, node span, node run) of the code running now: one variable, so entering
# a node is one set. The third item is the engine's lean node span running in this task (None
# elsewhere): ``telemetry_spans`` keeps it here rather than in a variable of its own to save a set
# per node. The fourth is the engine's run of the node whose attempt is running in this task (None
# elsewhere): a lean attempt span with nothing registered is made from it when asked for (see
# ``telemetry_spans.NodeRunLike``).
_log_ids: ContextVar[tuple[str | None, str | None, Any, Any]] = ContextVar(
    "weft_log_ids", default=(None, None, None, None)
)

# The same variable, for a hot path that cannot afford a ``log_context`` object: the engine sets
# ``(execution_id, node_id, LOG_IDS.get()[2], node_run)`` around each node attempt and resets the
# token after (about 0.1 us). Keep the third item as it is: it is the enclosing node span, if any.
LOG_IDS = _log_ids


def current_log_ids() -> tuple[str | None, str | None]:
    """The (execution_id, node_id) that log records get stamped with right now."""
    ids = _log_ids.get()
    return ids[0], ids[1]


class log_context:  # lower case: used like a function, ``with log_context(execution_id=...)``
    """Puts an execution id and/or node id in context for every log record inside the block
    (``None`` keeps the enclosing value)."""

    __slots__ = ("_exec", "_node", "_token")

    def __init__(self, execution_id: str | None = None, node_id: str | None = None) -> None:
        self._exec = execution_id
        self._node = node_id
        self._token: Token[tuple[str | None, str | None, Any, Any]] | None = None

    def __enter__(self) -> log_context:
        outer_exec, outer_node, node_span, node_run = _log_ids.get()
        self._token = _log_ids.set(
            (self._exec if self._exec is not None else outer_exec,
             self._node if self._node is not None else outer_node,
             node_span, node_run)
        )  # fmt: skip
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _log_ids.reset(self._token)


class ContextFilter(logging.Filter):
    """Copies trace/span ids and execution/node ids from the caller's context onto the record.

    Runs in the thread and task that logged, so the ids are the caller's even when the record
    is formatted elsewhere. Ids passed explicitly (``extra={"node_id": ...}``) win.
    """

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            if not getattr(record, "trace_id", None):
                record.trace_id = format(ctx.trace_id, "032x")
            if not getattr(record, "span_id", None):
                record.span_id = format(ctx.span_id, "016x")
        execution_id, node_id = _log_ids.get()[:2]
        if not getattr(record, "execution_id", None):
            record.execution_id = execution_id
        if not getattr(record, "node_id", None):
            record.node_id = node_id
        if self.service and not getattr(record, "service", None):
            record.service = self.service
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the extra ids (execution, node, trace) a record carries."""

    EXTRA_KEYS = ("service", "execution_id", "node_id", "trace_id", "span_id")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in self.EXTRA_KEYS:
            value = getattr(record, key, None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """The human format, with the execution/node/trace ids appended to the message when a record
    has them (before a traceback, so they stay on the record's first line)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = [
            f"{key}={value}"
            for key in ("execution_id", "node_id", "trace_id")
            if (value := getattr(record, key, None))
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


def setup_logging(level: str = "INFO", *, json_lines: bool = False, service: str = "") -> None:
    """Replace the root handlers with one stderr handler (JSON lines or text), ids included."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
