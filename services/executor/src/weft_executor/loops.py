"""``loop`` containers (SPEC section 3): ``for``, ``forEach``, ``while``, ``doWhile``.

Iterations run one after another; each is a fresh frame (scope ``[{container, index}]``) released
as soon as its result is taken, so memory holds the results and one iteration, whatever the count.
Decisions that depend on data (the item list, each ``while``/``doWhile`` test) are recorded as
steps, so a replay walks the same iterations without re-evaluating them.
"""

from __future__ import annotations

from typing import Any

from .containers import ContainerRun
from .frames import Frame, NodeRun
from .handlers.base import NodeFailure
from .outputs import collection_items, count_value

__all__ = ["DEFAULT_MAX_ITERATIONS", "LoopRun"]

DEFAULT_MAX_ITERATIONS = 1000
KINDS = ("for", "forEach", "while", "doWhile")


class LoopRun(ContainerRun):
    def start(self, starts: list[NodeRun]) -> None:
        cfg = self.config
        self.kind = str(cfg.get("kind") or "for")
        if self.kind not in KINDS:
            raise self.failure(
                f"config.kind {self.kind!r} is not one of {', '.join(KINDS)}", "INVALID_CONFIG"
            )
        self.max_iterations = count_value(
            self.node.id, "maxIterations", cfg.get("maxIterations", DEFAULT_MAX_ITERATIONS)
        )
        self.items: list[Any] | None = None
        self.total: int | None = None
        self.index = 0
        # ``while``: the body outputs of the iteration that just finished, for the next test.
        self.last_outputs: dict[str, Any] | None = None
        if self.kind in ("for", "forEach"):
            data = self.decide("start", self._decide_items)
            self.items = data.get("items")
            self.total = int(data["total"])
            if self.total > self.max_iterations:
                raise self.failure(
                    f"{self.total} iterations exceed maxIterations {self.max_iterations}",
                    "MAX_ITERATIONS",
                )
        self._advance(starts)

    def _decide_items(self) -> dict[str, Any]:
        resolver = self.ex.resolver_for(self.run.frame)
        if self.kind == "for":
            if "count" not in self.config:
                raise self.failure("config.count is required for kind 'for'", "INVALID_CONFIG")
            return {
                "total": count_value(self.node.id, "count", resolver.render(self.config["count"]))
            }
        if "items" not in self.config:
            raise self.failure("config.items is required for kind 'forEach'", "INVALID_CONFIG")
        items = collection_items(self.node.id, "items", resolver.render(self.config["items"]))
        return {"total": len(items), "items": items}

    def _test(self, frame: Frame, name: str) -> bool:
        """Evaluate ``condition`` against ``frame`` (recorded as decision ``name``)."""
        condition = self.config.get("condition")
        if not isinstance(condition, str) or not condition.strip():
            raise self.failure(
                f"config.condition is required for kind {self.kind!r}", "INVALID_CONFIG"
            )

        def decide() -> dict[str, Any]:
            return {"value": bool(self.ex.resolver_for(frame).evaluate(condition))}

        return bool(self.decide(name, decide)["value"])

    def _should_run(self, k: int) -> bool:
        """Whether iteration ``k`` runs (``doWhile`` decided after the previous one)."""
        if self.kind in ("for", "forEach"):
            assert self.total is not None
            return k < self.total
        if self.kind == "while":
            # The test sees ``loop.index`` = k (the iteration about to run) and the body outputs
            # of iteration k-1 (absent before the first), as doWhile sees the finished one.
            probe = self.new_frame(k, None, None)
            if self.last_outputs is not None:
                probe.outputs, self.last_outputs = self.last_outputs, None
            if not self._test(probe, f"while:{k}"):
                return False
        if k >= self.max_iterations:
            raise self.failure(
                f"still running after maxIterations {self.max_iterations}", "MAX_ITERATIONS"
            )
        return True

    def _again(self, frame: Frame) -> bool:
        """After iteration ``frame.index``: ``doWhile`` tests its condition, the others go on."""
        if self.kind != "doWhile":
            return True
        return self._test(frame, f"again:{frame.index}")

    def _advance(self, starts: list[NodeRun]) -> None:
        """Open the next iteration, or complete. Empty bodies are walked here, not recursively."""
        try:
            while not self.closed:
                k = self.index
                if not self._should_run(k):
                    break
                item = self.items[k] if self.items is not None else None
                frame = self.new_frame(k, item, self.total)
                if frame.pending:
                    self.enter(frame, starts)
                    return  # the body runs; frame_done continues
                frame.closed = True
                self.results.append(self.result_of(frame))
                self.index += 1
                if not self._again(frame):
                    break
        except NodeFailure as exc:
            self.fail(exc.to_error(self.node.id), starts, retryable=exc.retryable)
            return
        self.complete(starts)

    def frame_done(self, frame: Frame, starts: list[NodeRun]) -> None:
        if self.closed:
            return
        if self.kind == "while":
            self.last_outputs = frame.outputs
        self.results.append(self.result_of(frame))
        self.index += 1
        try:
            again = self._again(frame)
        except NodeFailure as exc:
            self.fail(exc.to_error(self.node.id), starts, retryable=exc.retryable)
            return
        if again:
            self._advance(starts)
        else:
            self.complete(starts)
