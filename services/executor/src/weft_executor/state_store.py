"""``ExecutionStore`` over the state service's ``CommitStep`` RPC: the durable hot path.

One store per running execution. It holds the lease and the optimistic-concurrency version: each
write sends the version it last saw and keeps the one the state service answers. A stale writer
(the lease was lost, another worker committed) gets ``ABORTED`` from the state service, raised
here as ``Conflict``; the worker then stops that execution without writing anything more.

Transient failures (the state service or its database restarting) are retried with backoff for
up to one lease period. A retry after an ambiguous failure may find the version already moved
(the first attempt did commit): that is reported as ``Conflict`` too, and the worker hands the
execution back so that it is resumed from whatever was really committed.

``CommitGroup`` (one per worker) is the cross-execution group commit: while ``max_in_flight``
commits are out, the commits other executions hand in wait and then go together (one message,
one database transaction on PostgreSQL). Each one is still answered on its own — a stale writer
is refused without failing the others — and only after the transaction that holds it committed,
so "durable before its successors start" holds per step. With nothing in flight a commit goes
out at once (no added latency).

They travel as messages of ``CommitStream`` calls (at most ``max_in_flight`` busy, idle ones
kept for the next commit): a unary call's set-up and teardown cost both processes more CPU than
the commit's own work and about a quarter of a chain's per-node time. A stream that fails, ends
or does not answer within the RPC timeout is dropped, its message failing as a failed call would
(``UNAVAILABLE``, ``DEADLINE_EXCEEDED``: retried, ambiguous). With tracing on each message has
a CLIENT span and carries its trace context, which the state service continues (a stream's
metadata goes once): the spans of a ``CommitSteps`` call. A state service without
``CommitStream`` gets ``CommitStep`` calls (``CommitSteps`` for a group).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from weft.state.v1 import state_pb2, state_pb2_grpc
from weft_common._telemetry_state import flags
from weft_common.errors import DETAILS_KEY, Conflict, from_rpc_error
from weft_common.telemetry_grpc import end_message_span, message_span

from .convert import _event as event_to_proto
from .convert import commit_to_request
from .records import Commit, EventDraft
from .tracing import record_commit

__all__ = ["CommitGroup", "StateExecutionStore"]

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


_CODES = {code.value[0]: code for code in grpc.StatusCode}
_COMMIT_STREAM = "/weft.state.v1.StateService/CommitStream"


class _NoStream(Exception):
    """The state service has no ``CommitStream`` (UNIMPLEMENTED): use the plain calls."""


class CommitError(grpc.RpcError):  # type: ignore[misc]
    """One commit's failure, from a ``CommitSteps`` outcome or the failed group call; reads like
    the ``AioRpcError`` a ``CommitStep`` would have raised (``from_rpc_error`` understands it)."""

    def __init__(self, code: grpc.StatusCode, message: str, details_json: str = "") -> None:
        super().__init__(message)
        self._code = code
        self._message = message
        self._trailers = ((DETAILS_KEY, details_json),) if details_json else ()

    @classmethod
    def of(cls, exc: grpc.aio.AioRpcError) -> CommitError:
        details = ""
        for key, value in exc.trailing_metadata() or ():
            if key == DETAILS_KEY:
                details = str(value)
        return cls(exc.code(), exc.details() or "", details)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


# (request, its RPC timeout, its size in bytes, the writer's future)
_Pending = tuple[
    state_pb2.CommitStepRequest, float, int, "asyncio.Future[state_pb2.CommitStepResponse]"
]


class CommitGroup:
    """Cross-execution group commit over one channel (see the module docstring)."""

    def __init__(
        self,
        stub: state_pb2_grpc.StateServiceStub,
        *,
        max_in_flight: int = 1,
        max_items: int = 256,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self._stub = stub
        self._max_in_flight = max(1, max_in_flight)
        self._max_items = max(1, max_items)
        # A group stays well under the gRPC message limit (64 MiB): big commits go on their own.
        self._max_bytes = max_bytes
        self._in_flight = 0
        self._queue: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._grouping = True  # off when the state service predates CommitSteps
        # Commits go over CommitStream calls (idle ones here, at most max_in_flight busy), off
        # when the state service predates it.
        self._streaming = True
        self._lanes: list[grpc.aio.StreamStreamCall] = []
        self.calls = 0  # RPCs and stream messages sent
        self.grouped = 0  # commits that went with others (CommitSteps call or stream message)

    async def commit(
        self, request: state_pb2.CommitStepRequest, rpc_timeout_s: float
    ) -> state_pb2.CommitStepResponse:
        """Commit ``request``; raises ``grpc.RpcError`` as a ``CommitStep`` call would."""
        if self._in_flight < self._max_in_flight and not self._queue:
            self._in_flight += 1
            self.calls += 1
            try:
                if self._streaming:
                    try:
                        return await self._stream_one(request, rpc_timeout_s)
                    except _NoStream:
                        pass  # an older state service: plain calls from now on
                response: state_pb2.CommitStepResponse = await self._stub.CommitStep(
                    request, timeout=rpc_timeout_s
                )
                return response
            finally:
                self._in_flight -= 1
                self._dispatch()
        future: asyncio.Future[state_pb2.CommitStepResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append((request, rpc_timeout_s, request.ByteSize(), future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._queue and self._in_flight < self._max_in_flight:
            batch: list[_Pending] = []
            size = taken = 0
            for pending in self._queue:
                if len(batch) >= self._max_items or (batch and size + pending[2] > self._max_bytes):
                    break
                taken += 1
                if not pending[3].done():  # a writer that gave up is left out
                    batch.append(pending)
                    size += pending[2]
            del self._queue[:taken]
            if not batch:
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            timeout = max(p[1] for p in batch)
            items = [p[0] for p in batch]
            response: state_pb2.CommitStreamResponse | state_pb2.CommitStepsResponse | None = None
            try:
                if self._streaming:
                    try:
                        self.calls += 1
                        message = state_pb2.CommitStreamRequest(commits=items)
                        response = await self._exchange(message, timeout)
                    except _NoStream:
                        self.calls -= 1
                        # an older state service: plain calls from now on
                if response is None:
                    if len(batch) == 1 or not self._grouping:
                        await asyncio.gather(*(self._send_one(p) for p in batch))
                        return
                    self.calls += 1
                    response = await self._stub.CommitSteps(
                        state_pb2.CommitStepsRequest(commits=items), timeout=timeout
                    )
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self._grouping = False  # an older state service: one call per commit
                    await asyncio.gather(*(self._send_one(p) for p in batch))
                    return
                error = exc if isinstance(exc, CommitError) else CommitError.of(exc)
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            if len(batch) > 1:
                self.grouped += len(batch)
            for (*_, future), outcome in zip(batch, response.outcomes, strict=True):
                if future.done():
                    continue
                if outcome.HasField("response"):
                    future.set_result(outcome.response)
                else:
                    code = _CODES.get(outcome.code, grpc.StatusCode.UNKNOWN)
                    future.set_exception(CommitError(code, outcome.message, outcome.details_json))
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else asyncio.CancelledError()
                    )
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _send_one(self, pending: _Pending) -> None:
        request, timeout, _, future = pending
        self.calls += 1
        try:
            response = await self._stub.CommitStep(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if not future.done():
                future.set_exception(CommitError.of(exc))
            return
        if not future.done():
            future.set_result(response)

    async def _stream_one(
        self, request: state_pb2.CommitStepRequest, deadline_s: float
    ) -> state_pb2.CommitStepResponse:
        response = await self._exchange(
            state_pb2.CommitStreamRequest(commits=[request]), deadline_s
        )
        outcome = response.outcomes[0]
        if outcome.HasField("response"):
            return outcome.response
        code = _CODES.get(outcome.code, grpc.StatusCode.UNKNOWN)
        raise CommitError(code, outcome.message, outcome.details_json)

    async def _exchange(
        self, request: state_pb2.CommitStreamRequest, deadline_s: float
    ) -> state_pb2.CommitStreamResponse:
        """``_send_message``; with tracing on, in a CLIENT span of its own whose trace context
        the message carries (the state service continues it: see ``MessageCall``)."""
        if not flags.tracing:
            return await self._send_message(request, deadline_s)
        span, request.traceparent, request.tracestate = message_span(_COMMIT_STREAM)
        try:
            response = await self._send_message(request, deadline_s)
        except grpc.RpcError as exc:
            end_message_span(span, exc.code(), exc.details())
            raise
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            code = grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN
            end_message_span(span, code)
            raise
        end_message_span(span, grpc.StatusCode.OK)
        return response

    async def _send_message(
        self, request: state_pb2.CommitStreamRequest, deadline_s: float
    ) -> state_pb2.CommitStreamResponse:
        """One message over an idle ``CommitStream`` (or a new one) and its answer. A stream
        that failed or timed out is dropped, its message failing like a failed call would
        (UNAVAILABLE, DEADLINE_EXCEEDED: ambiguous, the writer's retry finds out). A reused
        stream that turns out to be gone before the message went out (the state service
        restarted while it was idle) is replaced once at once: nothing was sent on it."""
        for reused in (bool(self._lanes), False):
            lane = self._lanes.pop() if reused else self._stub.CommitStream()
            try:
                await lane.write(request)
            except asyncio.CancelledError:
                lane.cancel()
                raise
            except Exception as exc:
                lane.cancel()
                if reused:
                    continue
                raise self._lane_error(exc) from None
            return await self._answer(lane, deadline_s)
        raise AssertionError("unreachable")

    async def _answer(
        self, lane: grpc.aio.StreamStreamCall, deadline_s: float
    ) -> state_pb2.CommitStreamResponse:
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            lane.cancel()

        timer = asyncio.get_running_loop().call_later(deadline_s, expire)
        try:
            response = await lane.read()
        except asyncio.CancelledError:
            lane.cancel()
            if expired:
                raise CommitError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "commit stream: no answer in time"
                ) from None
            raise
        except Exception as exc:
            lane.cancel()
            raise self._lane_error(exc) from None
        finally:
            timer.cancel()
        if response is grpc.aio.EOF:
            lane.cancel()
            raise CommitError(grpc.StatusCode.UNAVAILABLE, "commit stream ended")
        self._lanes.append(lane)  # idle again: the next message may use it
        return response  # type: ignore[no-any-return]

    def _lane_error(self, exc: Exception) -> Exception:
        """A stream's failure as its message's: UNAVAILABLE (retried) whatever ended it, save
        UNIMPLEMENTED (no CommitStream there) and DEADLINE_EXCEEDED."""
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            self._streaming = False
            return _NoStream()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CommitError.of(exc)
        return CommitError(grpc.StatusCode.UNAVAILABLE, f"commit stream failed: {exc!r}")

    async def close(self) -> None:
        while self._lanes:
            self._lanes.pop().cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # closing: the writers got the error
                pass


class StateExecutionStore:
    """Commits one execution's steps through ``StateService.CommitStep`` under its lease."""

    __slots__ = (
        "_fenced",
        "_group",
        "_retry_budget_s",
        "_stub",
        "_timeout_s",
        "last_seq",
        "lease",
        "version",
    )

    def __init__(
        self,
        stub: state_pb2_grpc.StateServiceStub,
        *,
        lease: state_pb2.Lease,
        version: int,
        retry_budget_s: float = 15.0,
        timeout_s: float = 10.0,
        group: CommitGroup | None = None,
    ) -> None:
        self._stub = stub
        self._group = group
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
                if self._group is not None:
                    response = await self._group.commit(request, self._timeout_s)
                else:
                    response = await self._stub.CommitStep(request, timeout=self._timeout_s)
                break
            except grpc.RpcError as exc:
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
            self.lease.execution_id,
            response.version,
            self.lease.token[:8],
            self.lease.worker_id,
            len(commit.steps),
            len(commit.events),
        )
        record_commit(time.perf_counter() - started)
        self.version = response.version
        if response.last_seq:
            self.last_seq = response.last_seq
