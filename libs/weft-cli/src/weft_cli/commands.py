"""The ``weft`` commands. Each returns its exit code: 0 ok, 1 execution failed or cancelled,
2 invalid workflow (diagnostics shown), 3 usage or connection error."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from .api import ApiClient, ApiError, ConnectionFailed, SseEvent
from .inputs import UsageError, load_json_file, parse_inputs
from .progress import Progress
from .render import format_event, print_diagnostics, print_status
from .session import Target, connect

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "dispatch"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_USAGE = 0, 1, 2, 3
TERMINAL = {"execution:completed", "execution:failed", "execution:cancelled"}


def _target(args: argparse.Namespace, *, quiet: bool = False) -> Target:
    return Target(url=args.url, token=args.token, data_dir=args.data_dir, quiet=quiet)


def _dump(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _invalid(exc: ApiError) -> int:
    sys.stderr.write(f"weft: invalid workflow: {exc.detail}\n")
    print_diagnostics(exc.diagnostics or [], sys.stderr)
    return EXIT_INVALID


# ---------------------------------------------------------------------- up
async def cmd_up(args: argparse.Namespace) -> int:
    from weft_common.logging_setup import setup_logging
    from weft_common.settings import CommonSettings
    from weft_common.telemetry import setup_telemetry

    from .stack import start_stack

    common = CommonSettings()
    setup_logging(common.log_level, json_lines=common.log_json, service="weft")
    # One process, one resource ("weft"); the state service's SQL and Redis calls are traced too.
    setup_telemetry("weft", common, libraries=("sqlalchemy", "asyncpg", "redis"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        stack = await start_stack(http_port=args.http_port, data_dir=args.data_dir)
    except OSError as exc:
        sys.stderr.write(f"weft up: {exc}\n")
        return EXIT_USAGE
    ports = stack.ports()
    sys.stderr.write(
        f"Weft is up: {stack.url}  (data {stack.data_dir}, database {stack.database_url}, "
        f"events {'redis' if common.redis_url else 'in-process'})\n"
        f"  gRPC: state :{ports['state']}  dag-builder :{ports['dag-builder']}  "
        f"executor :{ports['executor']}\n  Ctrl-C to stop.\n"
    )
    try:
        await stop.wait()
    finally:
        sys.stderr.write("weft up: stopping\n")
        stop.clear()  # a second Ctrl-C/SIGTERM while stopping means: stop now
        await _stop_within(stack.stop(), stop, common.grpc_shutdown_grace_s + STOP_SLACK_S)
    await _leave_cleanly()
    return EXIT_OK


STOP_SLACK_S = 20.0


async def _stop_within(stopping: Any, again: asyncio.Event, within: float) -> None:
    """Run the stack's shutdown; if it outlasts ``within`` seconds or a second signal arrives, print
    where every task and thread is stuck (so a hang is diagnosable) and give up on it."""
    task = asyncio.ensure_future(stopping)
    interrupt = asyncio.ensure_future(again.wait())
    await asyncio.wait({task, interrupt}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    interrupt.cancel()
    if task.done():
        task.result()
        return
    import faulthandler

    why = "second signal" if again.is_set() else f"not stopped after {within:.0f} s"
    sys.stderr.write(f"weft up: {why}; exiting without a clean stop. Stuck tasks:\n")
    for other in asyncio.all_tasks():
        trail = _awaiting(other.get_coro())
        # gRPC's own idle request loops (Cython frames only) say nothing about the hang.
        if other is not asyncio.current_task() and not all(".pyx" in w for w in trail):
            sys.stderr.write(f"  task {other.get_name()}:\n" + "".join(f"    {w}\n" for w in trail))
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    # Every step is already committed; what is left is only in-memory. asyncio.run would wait for
    # the stuck tasks again, so leave at once (another replica or the next start resumes the work).
    os._exit(EXIT_FAILED)


async def _leave_cleanly(within: float = 5.0) -> None:
    """After a clean stop, finish what ``asyncio.run`` would otherwise wait on without a bound:
    leftover tasks (cancelled here) and threads (the default executor's, database drivers').
    Whatever is still stuck after ``within`` is named and left behind: every step is committed."""
    import threading

    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    if tasks:
        await asyncio.wait(tasks, timeout=within)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.shutdown_default_executor(), max(0.1, deadline - loop.time()))
    stuck = [t.get_name() for t in tasks if not t.done()]
    threads = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    for thread in threads:
        thread.join(max(0.0, deadline - loop.time()))
    stuck += [f"thread {t.name}" for t in threads if t.is_alive()]
    if stuck:
        sys.stderr.write(f"weft up: stopped, leaving behind: {', '.join(stuck)}\n")
        sys.stderr.flush()
        os._exit(EXIT_OK)


def _awaiting(coro: Any) -> list[str]:
    """Where a suspended coroutine waits: its frame, then each coroutine it awaits, innermost last."""
    out: list[str] = []
    while coro is not None and len(out) < 40:
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is not None:
            out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return out


# ---------------------------------------------------------------------- run
async def _follow(api: ApiClient, events: Any, progress: Progress | None) -> tuple[str, int, bool]:
    """Consume an SSE stream; returns (execution id, last seq, ended with a terminal event)."""
    eid, last = "", 0
    async for item in events:
        if isinstance(item, str):
            eid = item or eid
            continue
        assert isinstance(item, SseEvent)
        eid = eid or str(item.data.get("executionId", ""))
        last = int(item.data.get("seq", last))
        if progress is not None:
            progress.on_event(item)
            if item.type == "execution:paused":
                progress.paused_nodes(await api.request("GET", f"/v1/executions/{eid}"))
        if item.type in TERMINAL:
            return eid, last, True
    return eid, last, False


async def follow_to_end(api: ApiClient, eid: str, last: int, progress: Progress | None) -> None:
    """Re-attach (Last-Event-ID) until a terminal event arrives."""
    for _ in range(100):
        _, last, done = await _follow(
            api, api.events("GET", f"/v1/executions/{eid}/stream", last_event_id=last), progress
        )
        if done:
            return
        await asyncio.sleep(0.5)
    raise ConnectionFailed("the event stream kept ending before the execution finished")


async def cmd_run(args: argparse.Namespace) -> int:
    definition = load_json_file(args.file)
    body = {"workflow": definition, "input": parse_inputs(args.input or [])}
    progress = None if args.json else Progress()
    async with connect(_target(args, quiet=args.json)) as (api, _):
        stream = api.events("POST", "/v1/executions", body)
        try:
            eid, last, done = await _follow(api, stream, progress)
        except ApiError as exc:
            if exc.diagnostics is not None:
                return _invalid(exc)
            raise
        if not done:
            await follow_to_end(api, eid, last, progress)
        execution = await api.request("GET", f"/v1/executions/{eid}")
    if args.json:
        _dump(execution)
    else:
        assert progress is not None
        progress.summary(execution)
        _dump(execution.get("outputs"))
    return EXIT_OK if execution.get("status") == "SUCCEEDED" else EXIT_FAILED


# ---------------------------------------------------------------------- validate
async def cmd_validate(args: argparse.Namespace) -> int:
    definition = load_json_file(args.file)
    async with connect(_target(args, quiet=True), embedded_fallback=False) as (api, _):
        if args.url is not None or await api.alive():
            result = await api.request("POST", "/v1/workflows/validate", definition)
        else:
            result = _validate_locally(definition)
    if args.json:
        _dump(result)
    elif result["valid"]:
        sys.stdout.write(f"{args.file}: valid\n")
    else:
        sys.stdout.write(f"{args.file}: invalid ({len(result['diagnostics'])} problem(s))\n")
        print_diagnostics(result["diagnostics"], sys.stdout)
    return EXIT_OK if result["valid"] else EXIT_INVALID


def _validate_locally(definition: Any) -> dict[str, Any]:
    """No gateway around: validate with the dag-builder's code in this process."""
    from weft_common.errors import InvalidArgument
    from weft_common.workflow import definition_from_json
    from weft_dag_builder import diagnostics_to_json, validate_workflow

    try:
        parsed = definition_from_json(definition)
    except InvalidArgument as exc:
        return {"valid": False, "diagnostics": [{"code": "MALFORMED", "message": exc.message}]}
    diagnostics = diagnostics_to_json(validate_workflow(parsed))
    return {"valid": not diagnostics, "diagnostics": diagnostics}


# ---------------------------------------------------------------------- status / logs
async def cmd_status(args: argparse.Namespace) -> int:
    async with connect(_target(args, quiet=args.json)) as (api, _):
        execution = await api.request("GET", f"/v1/executions/{args.id}")
        nodes = await api.request("GET", f"/v1/executions/{args.id}/nodes")
    if args.json:
        _dump({**execution, "nodes": nodes})
    else:
        print_status(execution, nodes, sys.stdout)
    return EXIT_OK


async def cmd_logs(args: argparse.Namespace) -> int:
    async with connect(_target(args, quiet=args.json)) as (api, _):
        execution = await api.request("GET", f"/v1/executions/{args.id}")
        upto = int(execution.get("lastSeq") or 0)
        if not args.follow and upto == 0:
            return EXIT_OK
        async for item in api.events("GET", f"/v1/executions/{args.id}/stream"):
            if isinstance(item, str):
                continue
            sys.stdout.write(
                (json.dumps(item.data) if args.json else format_event(item.data)) + "\n"
            )
            sys.stdout.flush()
            if not args.follow and int(item.data.get("seq", 0)) >= upto:
                break
    return EXIT_OK


# ---------------------------------------------------------------------- resume / cancel
async def cmd_resume(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"nodeId": args.node, "input": parse_inputs(args.input or [])}
    async with connect(_target(args)) as (api, stack):
        await api.request("POST", f"/v1/executions/{args.id}/resume", body)
        sys.stderr.write(f"resumed {args.id} at {args.node}\n")
        if stack is None:
            return EXIT_OK
        # The embedded stack lives only for this command: see the run to its end or next pause.
        progress = Progress()
        execution = await api.request("GET", f"/v1/executions/{args.id}")
        async for item in api.events(
            "GET",
            f"/v1/executions/{args.id}/stream",
            last_event_id=int(execution.get("lastSeq") or 0),
        ):
            if isinstance(item, str):
                continue
            progress.on_event(item)
            if item.type in TERMINAL or item.type == "execution:paused":
                break
        execution = await api.request("GET", f"/v1/executions/{args.id}")
        _dump(execution.get("outputs"))
        return EXIT_FAILED if execution.get("status") in ("FAILED", "CANCELLED") else EXIT_OK


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with connect(_target(args)) as (api, _):
        await api.request("POST", f"/v1/executions/{args.id}/cancel", {"reason": args.reason})
    sys.stderr.write(f"cancel requested for {args.id}\n")
    return EXIT_OK


# ---------------------------------------------------------------------- workflows
async def cmd_workflows_register(args: argparse.Namespace) -> int:
    definition = load_json_file(args.file)
    async with connect(_target(args)) as (api, _):
        try:
            result = await api.request("POST", "/v1/workflows", definition)
        except ApiError as exc:
            if exc.diagnostics is not None:
                return _invalid(exc)
            raise
    if args.json:
        _dump(result)
    else:
        sys.stdout.write(f"registered {result['id']} version {result['version']}\n")
    return EXIT_OK


async def cmd_workflows_list(args: argparse.Namespace) -> int:
    async with connect(_target(args, quiet=args.json)) as (api, _):
        workflows = await api.request("GET", "/v1/workflows")
    if args.json:
        _dump(workflows)
    else:
        for w in workflows:
            sys.stdout.write(f"{w['id']:<32} v{w['version']:<4} {w.get('name') or ''}\n")
    return EXIT_OK


COMMANDS = {
    "up": cmd_up,
    "run": cmd_run,
    "validate": cmd_validate,
    "status": cmd_status,
    "logs": cmd_logs,
    "resume": cmd_resume,
    "cancel": cmd_cancel,
    "workflows register": cmd_workflows_register,
    "workflows list": cmd_workflows_list,
}


async def dispatch(args: argparse.Namespace) -> int:
    name = args.command if args.command != "workflows" else f"workflows {args.workflows_command}"
    try:
        return await COMMANDS[name](args)
    except UsageError as exc:
        sys.stderr.write(f"weft: {exc}\n")
        return EXIT_USAGE
    except ConnectionFailed as exc:
        sys.stderr.write(f"weft: {exc}\n")
        return EXIT_USAGE
    except ApiError as exc:
        if exc.diagnostics is not None and exc.status == 422:
            return _invalid(exc)
        sys.stderr.write(f"weft: {exc.detail} (HTTP {exc.status})\n")
        return EXIT_USAGE
