"""``weft``: run the embedded stack, run and inspect workflows from the terminal."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import NoReturn

from .commands import EXIT_USAGE, dispatch

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    conn = _Parser(add_help=False)
    conn.add_argument("--url", default=None,
                      help="gateway URL (default $WEFT_URL or http://127.0.0.1:8080; when nothing "
                           "listens there an embedded stack is started for the command)")
    conn.add_argument("--token", default=None, help="bearer token (default $WEFT_TOKEN)")
    conn.add_argument("--data-dir", default=".weft", help="data dir of an embedded stack (default .weft)")
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="machine-readable output only")

    p = _Parser(prog="weft", description="Weft: durable workflow execution.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", help="start all four services in this process (embedded mode)")
    up.add_argument("--http-port", type=int, default=8080, help="HTTP API port (default 8080; 0 = any)")
    up.add_argument("--data-dir", default=".weft", help="where the SQLite database lives (default .weft)")

    run = sub.add_parser("run", parents=[conn, json_flag], help="run a workflow file and watch it")
    run.add_argument("file", help="workflow definition (JSON)")
    run.add_argument("--input", "-i", action="append", metavar="KEY=VALUE|@FILE.json",
                     help="execution input; repeatable")

    val = sub.add_parser("validate", parents=[conn, json_flag], help="validate a workflow file")
    val.add_argument("file")

    st = sub.add_parser("status", parents=[conn, json_flag], help="an execution's status and node runs")
    st.add_argument("id")

    logs = sub.add_parser("logs", parents=[conn, json_flag], help="an execution's event log")
    logs.add_argument("id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep following until it ends")

    res = sub.add_parser("resume", parents=[conn], help="resume a paused node")
    res.add_argument("id")
    res.add_argument("node")
    res.add_argument("--input", "-i", action="append", metavar="KEY=VALUE|@FILE.json")

    can = sub.add_parser("cancel", parents=[conn], help="cancel an execution")
    can.add_argument("id")
    can.add_argument("--reason", default="cancelled from the weft CLI")

    wf = sub.add_parser("workflows", help="registered workflows")
    wf_sub = wf.add_subparsers(dest="workflows_command", required=True, parser_class=_Parser)
    reg = wf_sub.add_parser("register", parents=[conn, json_flag], help="register a definition")
    reg.add_argument("file")
    wf_sub.add_parser("list", parents=[conn, json_flag], help="list workflows")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(dispatch(args))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
