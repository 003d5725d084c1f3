"""``parallel`` containers (SPEC section 3): ``count`` or ``collection`` branches at once.

Branches are frames opened up to ``maxConcurrency`` at a time (unbounded by default; node runs
are still bounded by the per-execution limit), each released as soon as its result is taken.
Results are ordered by branch index. A failed branch fails the container and cancels the others,
unless ``continueOnError``: then its result is ``{"error": ...}`` and the others go on.
"""

from __future__ import annotations

from typing import Any

from .containers import ContainerRun
from .frames import Frame, NodeRun
from .outputs import collection_items, count_value, frame_result

__all__ = ["ParallelRun"]

KINDS = ("count", "collection")


class ParallelRun(ContainerRun):
    def start(self, starts: list[NodeRun]) -> None:
        cfg = self.config
        self.kind = str(cfg.get("kind") or ("collection" if "items" in cfg else "count"))
        if self.kind not in KINDS:
            raise self.failure(
                f"config.kind {self.kind!r} is not one of {', '.join(KINDS)}", "INVALID_CONFIG"
            )
        limit = cfg.get("maxConcurrency")
        self.max_concurrency = count_value(self.node.id, "maxConcurrency", limit) if limit else 0
        self.continue_on_error = bool(cfg.get("continueOnError", False))
        data = self.decide("start", self._decide)
        self.items: list[Any] | None = data.get("items")
        self.total = int(data["total"])
        self.results = [None] * self.total
        self.next_index = 0
        self.finished = 0
        self._launch(starts)

    def _decide(self) -> dict[str, Any]:
        resolver = self.ex.resolver_for(self.run.frame)
        if self.kind == "count":
            if "count" not in self.config:
                raise self.failure("config.count is required for kind 'count'", "INVALID_CONFIG")
            return {
                "total": count_value(self.node.id, "count", resolver.render(self.config["count"]))
            }
        if "items" not in self.config:
            raise self.failure("config.items is required for kind 'collection'", "INVALID_CONFIG")
        items = collection_items(self.node.id, "items", resolver.render(self.config["items"]))
        return {"total": len(items), "items": items}

    def _launch(self, starts: list[NodeRun], *, free: bool = False) -> None:
        """Open branches while the concurrency bound allows; complete when all are done.

        ``free``: a branch finished (not a failure): the branches it makes room for depend on
        nothing it recorded, so their entries go to ``free_starts`` and start without waiting
        for its commit (the container's own completion still goes through ``starts``)."""
        entries = self.ex.free_starts if free else starts
        limit = self.max_concurrency
        active = self.active
        total = self.total
        items = self.items
        while not self.closed and self.next_index < total and (not limit or len(active) < limit):
            i = self.next_index
            self.next_index += 1
            frame = self.new_frame(i, items[i] if items is not None else None, total)
            if frame.pending:
                self.enter(frame, entries)
            else:
                frame.closed = True
                self.results[i] = frame_result(frame, self.exits)
                self.finished += 1
        if not self.closed and self.finished == total:
            self.complete(starts)

    def frame_done(self, frame: Frame, starts: list[NodeRun]) -> None:
        if self.closed:
            return
        self.active.pop(frame.index, None)
        exits = self.exits
        # frame_result, inlined for the common single exit (one call less per branch).
        self.results[frame.index] = (
            frame.outputs.get(exits[0]) if len(exits) == 1 else frame_result(frame, exits)
        )
        self.finished += 1
        self._launch(starts, free=True)

    def frame_failed(self, frame: Frame, error: dict[str, Any], starts: list[NodeRun]) -> None:
        if self.closed:
            return
        if not self.continue_on_error:
            super().frame_failed(frame, error, starts)
            return
        self.active.pop(frame.index, None)
        self.results[frame.index] = {"error": error}
        self.finished += 1
        self._launch(starts)
