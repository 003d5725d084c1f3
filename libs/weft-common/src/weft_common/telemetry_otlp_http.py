"""OTLP over HTTP (``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``, usually port 4318): the SDK's
OTLP/HTTP span exporter sending the request Weft's encoder writes (``telemetry_otlp``), lean
records included. Its own module: the HTTP exporter imports ``requests``, which a process
exporting over gRPC (the default) need not load."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from .telemetry_otlp import encode_spans_bytes
from .telemetry_spans import lean_spans

__all__ = ["WeftOTLPHTTPSpanExporter"]

_logger = logging.getLogger("weft.telemetry")


class WeftOTLPHTTPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter (endpoint, headers, TLS, compression, timeout and
    retries from the standard variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``, or
    ``..._TRACES_ENDPOINT`` as it is) with ``encode_spans_bytes`` as its encoder. Against an
    SDK whose exporter is laid out otherwise, the SDK's own ``export`` (and encoder)."""

    weft_lean_records = True

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        metrics = getattr(self, "_metrics", None)
        if self._shutdown or not callable(getattr(client, "export", None)) or metrics is None:
            return super().export(lean_spans(spans))
        with metrics.export_operation(len(spans)) as result:
            try:
                data = encode_spans_bytes(spans)
            except Exception as error:  # as the SDK's exporter: the batch fails, logged
                _logger.exception("Failed to encode span batch")
                result.error = error
                return SpanExportResult.FAILURE
            limit = getattr(self, "_max_request_size", 0) or 0
            if 0 < limit < len(data):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d",
                    len(data),
                    limit,
                )
                return SpanExportResult.FAILURE
            outcome = client.export(data)  # type: ignore[union-attr]
            if not outcome.success:
                result.error = outcome.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
