"""Weft stream gateway: the HTTP API and SSE of SPEC section 6, a client of the gRPC services."""

from __future__ import annotations

from .settings import GatewaySettings

__all__ = ["GatewaySettings"]
