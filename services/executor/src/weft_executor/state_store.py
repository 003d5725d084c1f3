"""``ExecutionStore`` over the state service's ``CommitStep`` RPC: the durable hot path.

One store per running execution. It holds the lease and the optimistic-concurrency version: each
write sends the version it last saw and keeps the one the state service answers. A stale writer
(the lease was lost, another worker committed) gets ``ABORTED`` from the state service, raised
here as ``Conflict``; the worker then stops that execution without writing anything more.

Transient failures (the state service or its database restarting) are retried with backoff for
up to one lease period. A retry after an ambiguous failure may find the version already moved
(the first attempt did commit): that is reported as ``Conflict`` too, and the worker hands the
execution back so that it is resumed from whatever was really committed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft_common.errors import Conflict, from_rpc_error

from .convert import _event as event_to_proto
from .convert import commit_to_request
from .records import Commit, EventDraft
from .tracing import record_commit

__all__ = ["StateExecutionStore"]

log = logging.getLogger("weft.executor.store")

# Codes worth retrying: the server is restarting, overloaded or its database is briefly gone.
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class StateExecutionStore:
    """Commits one execution's steps through ``StateService.CommitStep`` under its lease."""

    __slots__ = ("_fenced", "_retry_budget_s", "_stub", "_timeout_s", "last_seq", "lease", "version")

    def __init__(
        self,
        stub: state_pb2_grpc.StateServiceStub,
        *,
        lease: state_pb2.Lease,
        version: int,
        retry_budget_s: float = 15.0,
        timeout_s: float = 10.0,
    ) -> None:
        self._stub = stub
        self.lease = lease
        self.version = version
        self.last_seq = 0
        self._fenced = ""
        self._retry_budget_s = retry_budget_s
        self._timeout_s = timeout_s

    def fence(self, reason: str) -> None:
        """Refuse every later write (the lease is gone): the engine stops at its next commit."""
        self._fenced = reason

    async def publish_live(self, events: list[tuple[int, EventDraft]]) -> None:
        """The journal's live lane: hand ``(seq, event)`` pairs to the execution's subscribers
        before their commit (``PublishLiveEvents``; nothing is stored). Raises on failure; the
        caller ignores it, since the commit delivers the same events."""
        if self._fenced:
            return
        request = state_pb2.PublishLiveEventsRequest(
            lease=self.lease,
            events=[state_pb2.LiveEvent(seq=seq, event=event_to_proto(e)) for seq, e in events],
        )
        await self._stub.PublishLiveEvents(request, timeout=self._timeout_s)

    @property
    def fenced(self) -> bool:
        return bool(self._fenced)

    async def write(self, commit: Commit) -> None:
        if self._fenced:
            raise Conflict(f"execution {self.lease.execution_id}: {self._fenced}")
        request = commit_to_request(commit, lease=self.lease, expected_version=self.version)
        started = time.perf_counter()
        deadline = time.monotonic() + self._retry_budget_s
        delay = 0.05
        retried = False
        while True:
            try:
                response = await self._stub.CommitStep(request, timeout=self._timeout_s)
                break
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                transient = code in _TRANSIENT
                if transient and time.monotonic() + delay < deadline and not self._fenced:
                    retried = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                error = from_rpc_error(exc)
                if code == grpc.StatusCode.ABORTED or transient:
                    # A stale writer, an ambiguous retry or a state service gone for longer than
                    # a lease: this worker must let go; the execution resumes from its last commit.
                    why = "after a retried commit, " if retried else ""
                    self.fence(error.message)
                    raise Conflict(
                        f"execution {self.lease.execution_id}: commit refused {why}at version "
                        f"{self.version}: {error.message}"
                    ) from None
                raise error from None
        log.debug(
            "execution %s: committed version %d (lease %s of %s, %d steps, %d events)",
            self.lease.execution_id, response.version, self.lease.token[:8], self.lease.worker_id,
            len(commit.steps), len(commit.events),
        )
        record_commit(time.perf_counter() - started)
        self.version = response.version
        if response.last_seq:
            self.last_seq = response.last_seq
