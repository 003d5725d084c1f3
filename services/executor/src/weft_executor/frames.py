"""Run state: a ``Frame`` is one instance of a body (the top level, or one iteration/branch of a
container); a ``NodeRun`` is one run of one node in one frame, keyed by (node id, scope)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .records import PausedNodeInfo, Scope, ScopeEntry

if TYPE_CHECKING:
    from weft_common.compiled import CompiledNode

    from .containers import ContainerRun
    from .engine import Resume

__all__ = ["Frame", "NodeRun", "RunLookup"]


class Frame:
    """One body instance: per-node edge counters, the outputs it holds, the runs still open."""

    __slots__ = (
        "closed",
        "container",
        "counts",
        "index",
        "item",
        "key_suffix",
        "kind",
        "open",
        "outputs",
        "owner",
        "parent",
        "pending",
        "readers_left",
        "scope",
        "total",
    )

    def __init__(
        self,
        container: str,
        kind: str,
        scope: Scope,
        key_suffix: str,
        parent: Frame | None,
        owner: ContainerRun | None,
        members: int,
        index: int = 0,
        item: Any = None,
        total: int | None = None,
    ) -> None:
        self.container = container
        self.kind = kind
        self.scope = scope
        # scope_key(node, scope) == node + key_suffix (the container run builds it in O(1)).
        self.key_suffix = key_suffix
        self.parent = parent
        self.owner = owner
        self.index = index
        self.item = item
        self.total = total
        self.outputs: dict[str, Any] = {}
        # Made on first use (most branch bodies have no inner edges and drop nothing).
        self.counts: dict[str, list[int]] | None = None
        self.readers_left: dict[str, int] | None = None
        self.pending = members  # members not settled yet
        self.open: dict[str, NodeRun] = {}
        self.closed = False

    def context(self) -> dict[str, Any]:
        """``{{loop.*}}`` / ``{{parallel.*}}`` / ``{{<containerId>.*}}`` inside this frame."""
        return {
            "index": self.index,
            "iteration": self.index + 1,
            "item": self.item,
            "total": self.total,
        }

    def child_scope(self, container: str, index: int) -> Scope:
        return (*self.scope, ScopeEntry(container, index))

    def child_key_prefix(self, container: str) -> str:
        """``key_suffix`` of this frame's child frames of ``container``, without the index."""
        base = self.key_suffix
        return f"{base}{'/' if base else '@'}{container}:"


@dataclass(slots=True, eq=False)
class NodeRun:
    node: CompiledNode
    frame: Frame
    key: str
    attempt: int = 0
    started_at: float = 0.0
    task: asyncio.Task[None] | None = None
    container: ContainerRun | None = None
    chunks: int = 0
    resume: Resume | None = None
    parked: PausedNodeInfo | None = None
    # The node:started event is already in the log (a replay of a run that was in flight).
    start_logged: bool = False
    finished: bool = False
    # Tracing's (weft_executor.tracing.run_attempt): the run context of a first attempt whose
    # span is this node run (nothing made for it unless something asks), or that span once made.
    span: Any = None

    @classmethod
    def of(cls, node: CompiledNode, frame: Frame) -> NodeRun:
        return cls(node=node, frame=frame, key=node.id + frame.key_suffix)


class RunLookup:
    """``lookup(root)`` for one node run: SPEC section 2 roots other than ``env``/``execution``.

    Raises KeyError when the root is absent, has not run yet, or was skipped."""

    __slots__ = ("_frame", "_input", "_nodes", "_start", "_variables")

    def __init__(
        self,
        frame: Frame,
        *,
        nodes: Any,
        input: Any,
        variables: dict[str, Any],
        start_node: str,
    ) -> None:
        self._frame = frame
        self._nodes = nodes
        self._input = input
        self._variables = variables
        self._start = start_node

    def __call__(self, name: str) -> Any:
        if name == "var":
            return self._variables
        if name in ("loop", "parallel"):
            f: Frame | None = self._frame
            while f is not None:
                if f.kind == name:
                    return f.context()
                f = f.parent
            raise KeyError(name)
        node = self._nodes.get(name)
        if node is None:
            if name in ("start", "input"):
                return self._input
            raise KeyError(name)
        if name == self._start:
            top = self._frame
            while top.parent is not None:
                top = top.parent
            if name in top.outputs:
                return top.outputs[name]
            return self._input
        f = self._frame
        while f is not None:
            if f.container == name:
                return f.context()  # an enclosing container: its iteration/branch values
            if f.container == node.parent:
                return f.outputs[name]  # KeyError when not run (yet) or skipped
            f = f.parent
        raise KeyError(name)
