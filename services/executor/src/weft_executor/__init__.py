"""Weft executor: the engine that runs compiled workflows, and its gRPC service."""

from .engine import Engine, EngineServices, Outcome, Resume, RunHandle

__all__ = ["Engine", "EngineServices", "Outcome", "Resume", "RunHandle"]
