"""What loops and parallels share: the container run's life inside the engine.

A container run owns the frames of its iterations/branches. The engine calls ``start`` when the
container node becomes ready, ``frame_done``/``frame_failed`` when a body frame settles, and
``cancel`` when the container itself is cancelled. The container calls back into the engine to
open frames, record its decisions (so a replay takes the same path) and complete or fail.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .frames import Frame, NodeRun
from .handlers.base import NodeFailure
from .outputs import frame_result
from .records import ScopeEntry

if TYPE_CHECKING:
    from .execution import ExecutionRun

__all__ = ["ContainerRun", "make_container"]


class ContainerRun(ABC):
    """Base: the active frames, the results, completion and failure."""

    def __init__(self, ex: ExecutionRun, run: NodeRun) -> None:
        self.ex = ex
        self.run = run
        node = self.node = run.node
        self.config = node.config
        plan = ex.plan
        cid = node.id
        self.exits = plan.exits[cid]
        self.active: dict[int, Frame] = {}
        self.results: list[Any] = []
        self.closed = False
        # This run's attempt (``retry`` on the container: each attempt is a fresh run of the
        # body). Attempt n > 1 keys its body runs and decisions apart ("b@L~2:0", "L#start~2"),
        # so steps, idempotency keys and a replay never mix two attempts; scopes stay the same.
        self.attempt = attempt = run.attempt
        self.timed = False  # a timeoutMs timer is armed (ExecutionRun.container_timers)
        # What every body frame shares, computed once per container run (not per frame).
        parent = run.frame
        self._parent_frame = parent
        self._scope = parent.scope
        prefix = parent.child_key_prefix(cid)
        self._key_prefix = prefix if attempt <= 1 else f"{prefix[:-1]}~{attempt}:"
        self._members = plan.member_count[cid]
        self._entry_nodes = plan.entry_nodes[cid]

    # -- engine callbacks ------------------------------------------------------------------
    @abstractmethod
    def start(self, starts: list[NodeRun]) -> None:
        """Open the first iteration(s)/branch(es); append the runs that became ready to ``starts``."""

    @abstractmethod
    def frame_done(self, frame: Frame, starts: list[NodeRun]) -> None:
        """One iteration/branch finished: record its result, open the next or close the container."""

    def frame_failed(self, frame: Frame, error: dict[str, Any], starts: list[NodeRun]) -> None:
        """Default: the body's failure is the container's failure (routable by its error edge;
        a new attempt when the container has ``retry`` left)."""
        self.active.pop(frame.index, None)
        self.fail(error, starts)

    def cancel(self) -> None:
        """Cancel every active body frame (the engine ends the container run itself)."""
        self.closed = True
        if self.timed:
            self.ex.stop_container_timer(self)
        for frame in list(self.active.values()):
            self.ex.cancel_frame(frame)
        self.active.clear()

    def close(self) -> None:
        self.closed = True
        if self.timed:
            self.ex.stop_container_timer(self)
        self.active.clear()

    # -- helpers ---------------------------------------------------------------------------
    def new_frame(self, index: int, item: Any, total: int | None) -> Frame:
        """Iteration/branch ``index``'s frame (scope: the container's scope + this entry)."""
        node = self.node
        return Frame(
            node.id,
            node.type,
            (*self._scope, ScopeEntry(node.id, index)),
            f"{self._key_prefix}{index}",
            self._parent_frame,
            self,
            self._members,
            index,
            item,
            total,
        )

    def enter(self, frame: Frame, starts: list[NodeRun]) -> None:
        """Make ``frame``'s entries ready (its body has members)."""
        self.active[frame.index] = frame
        suffix = frame.key_suffix
        for node in self._entry_nodes:
            starts.append(NodeRun(node, frame, node.id + suffix))

    def result_of(self, frame: Frame) -> Any:
        self.active.pop(frame.index, None)
        return frame_result(frame, self.exits)

    def complete(self, starts: list[NodeRun]) -> None:
        if self.closed:
            return
        self.close()
        results, self.results = self.results, []
        self.ex.container_completed(self.run, results, starts)

    def fail(self, error: dict[str, Any], starts: list[NodeRun], *, retryable: bool = True) -> None:
        """This attempt failed: stop its body; the engine retries the container (``retry``,
        ``retryable``) or fails it."""
        if self.closed:
            return
        self.cancel()
        self.ex.container_failed(self.run, error, retryable, starts)

    def decide(self, name: str, make: Any) -> dict[str, Any]:
        """A recorded decision of this attempt (``ExecutionRun.decision``)."""
        return self.ex.decision(
            self.run, name if self.attempt <= 1 else f"{name}~{self.attempt}", make
        )

    def failure(self, message: str, code: str) -> NodeFailure:
        return NodeFailure(f"node {self.node.id}: {message}", code, retryable=False)

    def error(self, message: str, code: str) -> dict[str, Any]:
        return self.failure(message, code).to_error(self.node.id)


def make_container(ex: ExecutionRun, run: NodeRun) -> ContainerRun:
    if run.node.type == "loop":
        from .loops import LoopRun

        return LoopRun(ex, run)
    from .parallel import ParallelRun

    return ParallelRun(ex, run)
