"""The event bus: live fan-out of committed events to streams, and "work appeared" wake-ups for
long-polling claimers.

``InProcessBus`` fans out inside this process (embedded mode). ``RedisBus`` does the same locally
and also publishes through Redis pub/sub, so that a replica streaming an execution hears the
commits other replicas make (it subscribes to that execution's channel while it streams it).

Two kinds of events travel on it: committed events (``publish``, after their transaction) and
live ones (``publish_live``: ``LiveEvent``, a ``stream:chunk`` handed over by the execution's
worker before its commit, with the seq that commit will give it). Streams tell them apart: a
live event ahead of the next seq waits for what precedes it, a committed one there means a
publish was missed.
The bus only speeds things up: publishing never blocks or fails a commit (Redis writes happen in
a background task and are dropped while Redis is down), and streams re-read the database when
they see a gap, overflow or silence, so losing Redis loses no event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .domain import StoredEvent

__all__ = ["EventBus", "InProcessBus", "LiveEvent", "RedisBus", "Subscription", "make_bus"]

log = logging.getLogger("weft.state.events")

EVENTS_PREFIX = "weft:events:"
WORK_CHANNEL = "weft:work"
_LIVE_MARK = "\tlive"  # appended to the source line of a Redis message of live events
# PUBLISH (channel, message) pairs given as ARGV, in order (one command for a whole batch).
_PUBLISH_ALL = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return 0"


@dataclass(frozen=True, slots=True)
class LiveEvent(StoredEvent):
    """An event published before its commit (the live lane of ``stream:chunk``): same seq and
    same JSON as the committed copy that follows it."""


class Subscription:
    """Live events of one execution for one stream. Bounded: on overflow the stream re-reads
    from the database (``overflowed`` tells it to)."""

    def __init__(self, bus: _LocalFanout, execution_id: str, maxsize: int) -> None:
        self._bus = bus
        self.execution_id = execution_id
        self._queue: asyncio.Queue[StoredEvent] = asyncio.Queue(maxsize)
        self.overflowed = False

    def put(self, event: StoredEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    async def get(self, wait_s: float) -> StoredEvent | None:
        """The next live event, or None after ``wait_s`` seconds of silence."""
        if not self._queue.empty():  # no timeout machinery while events are waiting
            return self._queue.get_nowait()
        try:
            return await asyncio.wait_for(self._queue.get(), wait_s)
        except TimeoutError:
            return None

    def reset(self) -> None:
        """Forget buffered events (the caller re-reads the database instead)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self.overflowed = False

    def close(self) -> None:
        self._bus._unsubscribe(self)


class EventBus(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish(self, execution_id: str, events: Sequence[StoredEvent]) -> None:
        """Fan out committed events (never blocks, never raises)."""

    def publish_live(self, execution_id: str, events: Sequence[LiveEvent]) -> None:
        """Fan out events ahead of their commit (never blocks, never raises)."""

    def subscribe(self, execution_id: str) -> Subscription: ...

    def notify_work(self) -> None:
        """Wake long-polling claimers: an execution became runnable."""

    async def wait_for_work(self, wait_s: float) -> bool:
        """True when woken by ``notify_work`` (here or on another replica) before ``wait_s`` seconds."""


class _LocalFanout:
    def __init__(self, *, buffer: int = 10_000) -> None:
        self._buffer = buffer
        self._subs: dict[str, set[Subscription]] = {}
        self._work_waiters: set[asyncio.Future[None]] = set()

    def subscribe(self, execution_id: str) -> Subscription:
        sub = Subscription(self, execution_id, self._buffer)
        self._subs.setdefault(execution_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.execution_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.execution_id]

    def _deliver(self, execution_id: str, events: Sequence[StoredEvent]) -> None:
        for sub in self._subs.get(execution_id, ()):
            for event in events:
                sub.put(event)

    def _has_subscribers(self, execution_id: str) -> bool:
        return execution_id in self._subs

    def _wake_workers(self) -> None:
        for fut in self._work_waiters:
            if not fut.done():
                fut.set_result(None)
        self._work_waiters.clear()

    async def wait_for_work(self, wait_s: float) -> bool:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._work_waiters.add(fut)
        try:
            await asyncio.wait_for(fut, wait_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._work_waiters.discard(fut)


class InProcessBus(_LocalFanout):
    """Fan-out inside one process (embedded mode, or no Redis configured)."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._wake_workers()

    def publish(self, execution_id: str, events: Sequence[StoredEvent]) -> None:
        if events:
            self._deliver(execution_id, events)

    def publish_live(self, execution_id: str, events: Sequence[LiveEvent]) -> None:
        if events:
            self._deliver(execution_id, events)

    def notify_work(self) -> None:
        self._wake_workers()


def _encode(source: str, events: Sequence[StoredEvent]) -> str:
    # One line per event: compact JSON never holds a raw newline or tab, so no escaping is needed.
    lines = [source]
    lines.extend(f"{e.seq}\t{e.type}\t{e.node_id}\t{e.payload_json}" for e in events)
    return "\n".join(lines)


def _decode(execution_id: str, data: str) -> tuple[str, list[StoredEvent]]:
    source, _, body = data.partition("\n")
    kind = LiveEvent if source.endswith(_LIVE_MARK) else StoredEvent
    events: list[StoredEvent] = []
    for line in body.split("\n") if body else ():
        seq, etype, node_id, payload = line.split("\t", 3)
        events.append(kind(execution_id, int(seq), etype, node_id, payload))
    return source.removesuffix(_LIVE_MARK), events


_PUBLISH_HEAD = b"*3\r\n$7\r\nPUBLISH\r\n$"
_REPLY_TIMEOUT_S = 5.0  # a Redis that answers nothing for this long is reconnected to
_MAX_PENDING = 100_000  # messages kept while Redis is slow or down (then dropped)


class _Publisher(asyncio.Protocol):
    """PUBLISH over a plain TCP connection of its own, RESP written and read here: the bus's
    hot path (one publish per commit) at the cost of one ``bytes`` join, one socket write per
    batch and a count of the replies; redis-py's client layer cost several times the commit's
    own CPU in the state service.

    One connection and one writer, so Redis runs the PUBLISHes in the order they were handed
    in. Batches: messages handed in while a batch's replies are outstanding go together in the
    next one. ``push`` never blocks; it schedules the write with ``call_soon``, so the commit
    that published answers its caller first (the answer is written before the loop comes back
    to this). While Redis is down messages wait (up to ``_MAX_PENDING``, then are dropped) and
    a batch written when the connection broke is lost: streams recover from the database."""

    def __init__(self, host: str, port: int, username: str | None, password: str | None) -> None:
        self._host, self._port = host, port
        self._auth: bytes | None = None
        if password is not None:
            words = ["AUTH", *([username] if username else []), password]
            self._auth = _command(words)
        self._pending: list[bytes] = []
        self._awaiting = 0  # replies still due for the batch written last
        self._sent_at = 0.0
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._scheduled = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._warned = False
        self.batches = 0  # batches written (tests)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._connect(), name="redis-publish")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._transport is not None:
            self._transport.close()

    def push(self, channel: str, message: str) -> None:
        if len(self._pending) >= _MAX_PENDING:
            return  # Redis is far behind or down: subscribers fall back to the database
        c, m = channel.encode(), message.encode()
        self._pending.append(b"%b%d\r\n%b\r\n$%d\r\n%b\r\n" % (_PUBLISH_HEAD, len(c), c, len(m), m))
        if self._awaiting:
            loop = asyncio.get_running_loop()
            if self._transport is not None and loop.time() - self._sent_at > _REPLY_TIMEOUT_S:
                self._transport.abort()  # Redis hangs: reconnect (connection_lost)
        elif not self._scheduled and self._transport is not None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._transport is None or self._awaiting or not self._pending:
            return
        batch, self._pending = self._pending, []
        self._awaiting = len(batch)
        self._sent_at = asyncio.get_running_loop().time()
        self.batches += 1
        self._transport.write(b"".join(batch))

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        lines = (self._buf + data).split(b"\r\n")
        self._buf = lines.pop()
        for line in lines:
            if line[:1] == b"-":
                self._warn(line.decode(errors="replace"))
            self._awaiting -= 1
        if self._awaiting <= 0:
            self._awaiting = 0
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._awaiting = 0  # the batch in flight may be lost: streams recover it
        self._buf = b""
        if not self._closed:
            self._warn(f"connection lost ({exc})")
            self.start()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                transport, _ = await asyncio.wait_for(
                    loop.create_connection(lambda: self, self._host, self._port), 1.0
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._warn(f"cannot connect ({exc})")
                await asyncio.sleep(0.5)
                continue
            assert isinstance(transport, asyncio.Transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # an idle publisher must notice a connection gone quietly
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._transport = transport
            if self._auth is not None:
                self._awaiting = 1  # its reply is counted like a PUBLISH's (an error is logged)
                self._sent_at = loop.time()
                transport.write(self._auth)
            else:
                self._flush()
            if self._warned:
                log.info("Redis publisher connected")
                self._warned = False
            return

    def _warn(self, what: str) -> None:
        if not self._warned:
            log.warning("Redis publish: %s; streams fall back to the database", what)
            self._warned = True


def _command(words: Sequence[str]) -> bytes:
    out = [b"*%d\r\n" % len(words)]
    for word in words:
        raw = word.encode()
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


class RedisBus(_LocalFanout):
    """Local fan-out plus Redis pub/sub between replicas (``weft:events:<id>`` while streamed here,
    ``weft:work``)."""

    def __init__(self, url: str, *, buffer: int = 10_000, prefix: str = "") -> None:
        super().__init__(buffer=buffer)
        from redis.asyncio import Redis  # imported here: embedded mode never needs redis
        from redis.asyncio.connection import Connection
        from redis.exceptions import ResponseError

        self._url = url
        self._prefix = prefix
        self._events_prefix = prefix + EVENTS_PREFIX
        self._work_channel = prefix + WORK_CHANNEL
        self.instance_id = uuid.uuid4().hex
        self._redis = Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=5.0, decode_responses=True
        )
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(100_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.connected = False
        self._warned = False
        self._pubsub: Any = None
        self._pending: set[asyncio.Task[None]] = set()
        self._scripts = True  # publish a batch with one EVAL (see _send)
        self._refused: type[Exception] = ResponseError  # what Redis answers an EVAL it refuses
        # Plain TCP (the usual case): publishes go through the lean publisher; TLS and Unix
        # sockets through redis-py (the outbox and _send_loop).
        pool = self._redis.connection_pool
        kw = pool.connection_kwargs
        self._publisher: _Publisher | None = (
            _Publisher(kw["host"], kw["port"], kw.get("username"), kw.get("password"))
            if pool.connection_class is Connection
            else None
        )

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._receive_loop(), name="redis-bus-receive")]
        if self._publisher is not None:
            self._publisher.start()
        else:
            self._tasks.append(asyncio.create_task(self._send_loop(), name="redis-bus-send"))

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._publisher is not None:
            await self._publisher.close()
        self._wake_workers()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    def subscribe(self, execution_id: str) -> Subscription:
        # Redis carries an execution's events to this replica only while someone here streams
        # it. Events committed before the SUBSCRIBE takes effect are in the database, which the
        # stream reads after subscribing (and again on a gap or a quiet period).
        first = not self._has_subscribers(execution_id)
        sub = super().subscribe(execution_id)
        if first:
            self._channel_op("subscribe", execution_id)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        super()._unsubscribe(sub)
        if not self._has_subscribers(sub.execution_id):
            self._channel_op("unsubscribe", sub.execution_id)

    def _channel_op(self, op: str, execution_id: str) -> None:
        pubsub = self._pubsub
        if pubsub is None or self._closed:
            return  # (re)connecting: the receive loop subscribes every current stream
        task = asyncio.get_running_loop().create_task(
            self._quiet(getattr(pubsub, op)(self._events_prefix + execution_id))
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _quiet(self, op: Any) -> None:
        with contextlib.suppress(Exception):
            await op

    def publish(self, execution_id: str, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        self._deliver(execution_id, events)
        self._enqueue(self._events_prefix + execution_id, _encode(self.instance_id, events))

    def publish_live(self, execution_id: str, events: Sequence[LiveEvent]) -> None:
        if not events:
            return
        self._deliver(execution_id, events)
        self._enqueue(
            self._events_prefix + execution_id, _encode(self.instance_id + _LIVE_MARK, events)
        )

    def notify_work(self) -> None:
        self._wake_workers()
        self._enqueue(self._work_channel, self.instance_id)

    def _enqueue(self, channel: str, message: str) -> None:
        if self._publisher is not None:
            self._publisher.push(channel, message)
            return
        try:
            self._outbox.put_nowait((channel, message))
        except asyncio.QueueFull:
            pass  # Redis is far behind or down: subscribers fall back to the database

    def _down(self, exc: BaseException) -> None:
        self.connected = False
        if not self._warned:
            log.warning("Redis unavailable (%s): streams fall back to database polling", exc)
            self._warned = True

    async def _send_loop(self) -> None:
        while not self._closed:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < 512:
                batch.append(self._outbox.get_nowait())
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: drop, the database has everything
                self._down(exc)
                await asyncio.sleep(0.5)

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        """PUBLISH every message of the batch, in order. One ``EVAL`` of a script that publishes
        them all: one command and one reply for the batch, where a pipeline packs, sends and
        parses one per message (most of the bus's CPU under load). The messages, channels and
        order are those of separate PUBLISHes. A server that refuses scripts gets a pipeline."""
        if self._scripts:
            args = [item for pair in batch for item in pair]
            try:
                await self._redis.eval(_PUBLISH_ALL, 0, *args)
                return
            except self._refused as exc:  # scripting disabled or not allowed: publish plainly
                log.info("Redis refuses the publish script (%s): publishing one by one", exc)
                self._scripts = False
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, message in batch:
                pipe.publish(channel, message)
            await pipe.execute()

    async def _receive_loop(self) -> None:
        while not self._closed:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                self._pubsub = pubsub  # from here on, new streams subscribe through it
                await pubsub.subscribe(
                    self._work_channel, *(self._events_prefix + i for i in list(self._subs))
                )
                if not self.connected:
                    log.info("Redis event bus connected")
                self.connected, self._warned = True, False
                async for message in pubsub.listen():
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)
                await asyncio.sleep(0.5)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, message: dict[str, str]) -> None:
        channel, data = message.get("channel", ""), message.get("data", "")
        if channel == self._work_channel:
            if data != self.instance_id:
                self._wake_workers()
            return
        execution_id = channel[len(self._events_prefix) :]
        if not self._has_subscribers(execution_id) or data.startswith(self.instance_id):
            return  # nobody streams it here, or our own message (source line, "\tlive" or not)
        try:
            _, events = _decode(execution_id, data)
        except ValueError:
            log.warning("malformed event message on %s", channel)
            return
        self._deliver(execution_id, events)


def make_bus(redis_url: str, *, buffer: int = 10_000, prefix: str = "") -> EventBus:
    return (
        RedisBus(redis_url, buffer=buffer, prefix=prefix)
        if redis_url
        else InProcessBus(buffer=buffer)
    )
