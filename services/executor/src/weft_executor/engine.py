"""The engine's public face: ``Engine.start`` runs one execution and returns a ``RunHandle``.

One ``Engine`` per worker process: it holds the per-worker concurrency budget shared by every
execution it runs, the services handed to handlers and the reference-resolver factory. Each
execution runs in an ``ExecutionRun`` (see ``execution.py``); persistence goes through the
``ExecutionStore`` passed to ``start`` and nothing else.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from weft_common.compiled import CompiledDag

from .execution import ExecutionRun
from .handlers.base import Resolver
from .records import ExecutionStore, PausedNodeInfo, Scope, ScopeEntry, StepRecord
from .settings import ExecutorSettings

__all__ = ["GC_THRESHOLDS", "Engine", "EngineServices", "Outcome", "Resume", "RunHandle", "tune_gc"]

# The collector's thresholds in a worker process (``tune_gc``): generation 0 is collected every
# 10,000 net allocations instead of 700 (generations 1 and 2 keep their defaults). Measured on the
# benchmarks, gc.freeze() is what matters; 50,000 was no better than 10,000, within the noise.
GC_THRESHOLDS = (10_000, 10, 10)
_gc_tuned = False


def tune_gc() -> bool:
    """Set up the garbage collector for a worker process; the executor calls it once at start-up
    (``ExecutorService.start``, so ``weft up`` too). False when it was already done here.

    An engine makes many short-lived records per node (events, steps, logs, frames). With the
    interpreter's defaults the collector runs every 700 allocations and its full collections walk
    the whole start-up heap (modules, protobuf descriptors, ...): a quarter of the CPU of a
    many-small-executions load. ``gc.freeze()`` moves what is alive after start-up out of the
    collector's sight (it is never freed by the cycle collector; reference counting still frees
    it), and the larger generation-0 threshold lets more records die by reference count before a
    collection looks at them. Cyclic garbage is still collected, only less often.
    """
    global _gc_tuned
    if _gc_tuned:
        return False
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return True


Lookup = Callable[[str], Any]
ResolverFactory = Callable[..., Resolver]


@dataclass(slots=True)
class EngineServices:
    """What handlers get as ``ctx.services`` when the caller gives nothing else."""

    settings: ExecutorSettings
    http_client: Any = None
    # Starts and watches child executions for `subworkflow` nodes (``subworkflows.py``).
    subworkflows: Any = None


class Resume(NamedTuple):
    """A queued resume: complete the parked node run (node_id, scope) with ``input``."""

    resume_id: str
    node_id: str
    scope: Scope = ()
    input: Any = None

    @classmethod
    def of(cls, resume_id: str, node_id: str, scope: Any = (), input: Any = None) -> Resume:
        """Accepts a scope as ScopeEntry tuples or SPEC JSON ``[{container, index}]``."""
        entries = tuple(
            s if isinstance(s, ScopeEntry) else ScopeEntry(str(s["container"]), int(s["index"]))
            for s in (scope or ())
        )
        return cls(resume_id, node_id, entries, input)


@dataclass(slots=True)
class Outcome:
    """How a run ended: SUCCEEDED, FAILED, CANCELLED, or PAUSED (parked nodes waiting)."""

    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    paused_nodes: list[PausedNodeInfo] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    token_usage: dict[str, Any] | None = None


class RunHandle:
    """A running execution: await its ``result()``, ``cancel()`` it, ``resume()`` a parked node."""

    def __init__(self, run: ExecutionRun) -> None:
        self._run = run
        self.execution_id = run.execution_id

    async def result(self) -> Outcome:
        """The outcome, once the final commit is durable. Raises what the store raised when a
        write failed (e.g. ``Conflict`` on a lost lease): nothing more was written then."""
        run = self._run
        if run.done.done():
            return run.done.result()
        # A future of our own: cancelling the caller cancels only its wait, never the run.
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        run.waiters.append(waiter)
        return await waiter

    def done(self) -> bool:
        return self._run.done.done()

    def cancel(self, reason: str = "") -> None:
        """Cancel the execution: running nodes stop now (``node:cancelled``), then
        ``execution:cancelled``. No effect once the run has finished."""
        self._run.cancel(reason)

    def resume(self, resume: Resume) -> bool:
        """Resume a parked node while the run is still going (another branch busy). False when
        the run is already finishing: the caller keeps the resume for the next run."""
        return self._run.resume(resume)


class Engine:
    """Runs executions on this worker (asyncio only; call ``start`` from the event loop)."""

    def __init__(
        self,
        settings: ExecutorSettings,
        *,
        services: Any = None,
        environ: Mapping[str, str] | None = None,
        resolver_factory: ResolverFactory | None = None,
    ) -> None:
        self.settings = settings
        self.services = services if services is not None else EngineServices(settings)
        self.environ = os.environ if environ is None else environ
        self._env_allow = settings.env_allow_list()
        self._resolver_factory = resolver_factory
        self._worker_limit = max(1, settings.max_concurrency_per_worker)
        self._worker_used = 0
        self._worker_waiting: deque[ExecutionRun] = deque()

    def start(
        self,
        *,
        execution_id: str,
        dag: CompiledDag,
        input: Any,
        store: ExecutionStore,
        variables: dict[str, Any] | None = None,
        steps: Sequence[StepRecord] = (),
        resumes: Sequence[Resume | tuple[Any, ...]] = (),
        emit_started: bool = True,
        open_runs: Collection[str] = (),
    ) -> RunHandle:
        """Start (or continue) an execution.

        A continuation passes the committed ``steps`` of the earlier run, its ``variables`` and
        pending ``resumes``; runs with a committed step are not executed again and emit nothing.
        ``open_runs``: keys of node runs whose ``node:started`` is already in the log without an
        end (they run again without a second ``node:started``). ``emit_started=False`` on a
        continuation so ``execution:started`` is not written twice.
        """
        run = ExecutionRun(
            self,
            execution_id=execution_id,
            dag=dag,
            input=input,
            store=store,
            variables=variables,
            steps=steps,
            resumes=[r if isinstance(r, Resume) else Resume.of(*r) for r in resumes],
            emit_started=emit_started,
            open_runs=open_runs,
        )
        run.begin()
        return RunHandle(run)

    # -- references -----------------------------------------------------------------------
    def make_resolver(self, lookup: Lookup, execution_id: str) -> Resolver:
        factory = self._resolver_factory
        if factory is None:
            from .resolve import ReferenceResolver

            factory = self._resolver_factory = ReferenceResolver
        return factory(
            lookup,
            execution_id=execution_id,
            env_allow=self._env_allow,
            environ=self.environ,
            timeout_ms=self.settings.expression_timeout_ms,
            max_depth=self.settings.expression_max_depth,
        )

    # -- the per-worker budget --------------------------------------------------------------
    def take_worker_slot(self, run: ExecutionRun) -> bool:
        if self._worker_used < self._worker_limit:
            self._worker_used += 1
            return True
        if not run.waiting_worker:
            run.waiting_worker = True
            self._worker_waiting.append(run)
        return False

    def release_worker_slot(self) -> None:
        self._worker_used -= 1
        while self._worker_waiting and self._worker_used < self._worker_limit:
            waiting = self._worker_waiting.popleft()
            waiting.waiting_worker = False
            if not waiting.finishing:
                waiting.pump()

    @property
    def worker_slots_in_use(self) -> int:
        return self._worker_used
