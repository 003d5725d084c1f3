"""Weft state service: workflows, executions, step commits, the event log, resumes and leases."""

from __future__ import annotations

from .server import RunningStateService, build_store, serve
from .settings import StateSettings
from .store import StateStore, StoreOptions

__all__ = [
    "RunningStateService",
    "StateSettings",
    "StateStore",
    "StoreOptions",
    "build_store",
    "serve",
]
