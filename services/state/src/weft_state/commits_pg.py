"""The PostgreSQL fast path of CommitStep: the whole commit as ONE statement (one round trip,
one implicit transaction, so it is atomic like the general path in ``commits``).

A data-modifying CTE updates the execution row under the optimistic-concurrency guard
(``version`` and ``lease_token``) and, only when that matched, inserts the events (seq and the
``{"seq":N,`` prefix computed from the returned ``last_seq``), the steps and the node logs from
arrays (``unnest``), so the statement text is constant and prepared once per connection.

Commits that touch the pause table (parking nodes, applying resumes, completing a step of a
parked node, or ending an execution with open pauses — the guard refuses those) return None and
take the general path; so do commits
that end a sub-workflow execution or a parent of active ones (``children``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from weft_common import jsonutil

from .domain import TERMINAL_STATUSES, CommitRequest, scope_key, scope_to_json

__all__ = ["FAST_COMMIT_BATCH_SQL", "FAST_COMMIT_SQL", "fast_commit_args"]

FAST_COMMIT_SQL = """
WITH head AS (
    UPDATE executions SET
        version = version + 1,
        last_seq = last_seq + $4,
        step_seq = step_seq + $5,
        updated_at = $6,
        started_at = COALESCE(started_at, $6),
        status = COALESCE($7, status),
        wake_at = COALESCE($9, CASE WHEN $8 THEN NULL ELSE wake_at END),
        finished_at = CASE WHEN $10 THEN $6 ELSE finished_at END,
        variables_json = COALESCE($11, variables_json),
        outputs_json = COALESCE($12, outputs_json),
        error_json = COALESCE($13, error_json),
        input_tokens = input_tokens + $14,
        output_tokens = output_tokens + $15,
        tokens_estimated = tokens_estimated OR $16,
        lease_owner = CASE WHEN $17 THEN NULL ELSE lease_owner END,
        lease_token = CASE WHEN $17 THEN NULL ELSE lease_token END,
        lease_expires_at = CASE WHEN $17 THEN NULL ELSE lease_expires_at END
    WHERE execution_id = $1 AND version = $2 AND lease_token = $3
      -- Open pauses: only a commit that closes one (a step of a parked node) or ends the
      -- execution needs the general path; other branches keep the fast one.
      AND NOT (open_pauses > 0 AND $18 AND ($10 OR EXISTS (
          SELECT 1 FROM pauses p, unnest($43::text[], $44::text[]) AS k(node_id, scope_key)
          WHERE p.execution_id = $1 AND p.state IN ('open', 'claimed')
            AND p.node_id = k.node_id AND p.scope_key = k.scope_key)))
      -- Ending a sub-workflow (or a parent of active ones) takes the general path (children.py).
      AND NOT ($10 AND (parent_execution_id <> '' OR EXISTS (
          SELECT 1 FROM executions c
          WHERE c.parent_execution_id = $1 AND c.status IN ('PENDING', 'RUNNING', 'PAUSED'))))
    RETURNING version, last_seq, step_seq
), ev AS (
    INSERT INTO events (execution_id, seq, type, node_id, payload_json, created_at)
    SELECT $1, head.last_seq - $4 + e.ord, e.type, e.node_id,
           '{"seq":' || (head.last_seq - $4 + e.ord)::text || ',' || e.tail, $6
    FROM head, unnest($19::text[], $20::text[], $21::text[]) WITH ORDINALITY AS e(type, node_id, tail, ord)
), st AS (
    INSERT INTO steps (execution_id, key, step_seq, node_id, scope_json, status, output_json,
                       error_json, fired_handles_json, data_json)
    SELECT $1, s.key, head.step_seq - $5 + s.ord, s.node_id, s.scope_json, s.status, s.output_json,
           s.error_json, s.fired, s.data
    FROM head, unnest($22::text[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[],
                      $28::text[], $29::text[])
         WITH ORDINALITY AS s(key, node_id, scope_json, status, output_json, error_json, fired, data, ord)
    ON CONFLICT (execution_id, key) DO UPDATE SET
        step_seq = EXCLUDED.step_seq, node_id = EXCLUDED.node_id, scope_json = EXCLUDED.scope_json,
        status = EXCLUDED.status, output_json = EXCLUDED.output_json,
        error_json = EXCLUDED.error_json, fired_handles_json = EXCLUDED.fired_handles_json,
        data_json = EXCLUDED.data_json
), nl AS (
    INSERT INTO node_logs (execution_id, node_id, scope_key, scope_json, status, attempt, node_type,
                           input_json, output_json, error_json, started_at, finished_at,
                           duration_us, token_usage_json, ordinal)
    SELECT $1, n.node_id, n.scope_key, n.scope_json, n.status, n.attempt, n.node_type, n.input_json,
           n.output_json, n.error_json, n.started_at, n.finished_at, n.duration_us, n.usage,
           head.version * 65536 + n.ord - 1
    FROM head, unnest($30::text[], $31::text[], $32::text[], $33::text[], $34::int[], $35::text[],
                      $36::text[], $37::text[], $38::text[], $39::timestamptz[], $40::timestamptz[],
                      $41::bigint[], $42::text[])
         WITH ORDINALITY AS n(node_id, scope_key, scope_json, status, attempt, node_type, input_json,
                              output_json, error_json, started_at, finished_at, duration_us, usage, ord)
    ON CONFLICT (execution_id, node_id, scope_key) DO UPDATE SET
        status = EXCLUDED.status, attempt = EXCLUDED.attempt,
        node_type = CASE WHEN EXCLUDED.node_type = '' THEN node_logs.node_type ELSE EXCLUDED.node_type END,
        input_json = CASE WHEN EXCLUDED.input_json = '' THEN node_logs.input_json ELSE EXCLUDED.input_json END,
        output_json = EXCLUDED.output_json, error_json = EXCLUDED.error_json,
        started_at = COALESCE(node_logs.started_at, EXCLUDED.started_at),
        finished_at = EXCLUDED.finished_at, duration_us = EXCLUDED.duration_us,
        token_usage_json = EXCLUDED.token_usage_json
)
SELECT version, last_seq FROM head
"""

# The same statement for ``CommitSteps`` (run once per item with ``fetchmany``: one pipelined
# round trip and one implicit transaction for the whole group). It always answers exactly one
# row, NULLs when the guard refused the item, so the answers line up with the items.
FAST_COMMIT_BATCH_SQL = FAST_COMMIT_SQL.replace(
    "SELECT version, last_seq FROM head\n",
    "SELECT (SELECT version FROM head) AS version, (SELECT last_seq FROM head) AS last_seq\n",
)
assert FAST_COMMIT_BATCH_SQL != FAST_COMMIT_SQL


def _json_or_empty(value: Any) -> str:
    return "" if value is None else jsonutil.dumps(value)


def fast_commit_args(req: CommitRequest, tails: list[str], now: datetime) -> list[Any] | None:
    """Arguments of ``FAST_COMMIT_SQL``; None when the commit needs the general path."""
    control = req.control
    if control.paused_nodes or control.applied_resume_ids:
        return None
    status = control.status
    terminal = status is not None and status in TERMINAL_STATUSES
    steps, logs = req.steps, req.node_logs
    closing = [s for s in steps if s.status not in ("PAUSED", "RUNNING")]  # may close a pause
    return [
        req.lease.execution_id,
        req.expected_version,
        req.lease.token,
        len(tails),
        len(steps),
        now,
        status.value if status is not None else None,
        status is not None,  # a status sets wake_at to exactly control.wake_at (see commits.py)
        control.wake_at,
        terminal,
        control.variables_json or None,
        control.outputs_json or None,
        jsonutil.dumps(control.error) if control.error is not None else None,
        control.input_tokens,
        control.output_tokens,
        control.tokens_estimated,
        control.release_lease or terminal,
        bool(closing) or terminal,
        [d.type for d in req.events],
        [d.node_id for d in req.events],
        tails,
        [s.key for s in steps],
        [s.node_id for s in steps],
        [jsonutil.dumps(scope_to_json(s.scope)) if s.scope else "" for s in steps],
        [s.status for s in steps],
        [s.output_json for s in steps],
        [_json_or_empty(s.error) for s in steps],
        [jsonutil.dumps(list(s.fired_handles)) if s.fired_handles else "" for s in steps],
        [s.data_json for s in steps],
        [n.node_id for n in logs],
        [scope_key(n.scope) for n in logs],
        [jsonutil.dumps(scope_to_json(n.scope)) if n.scope else "" for n in logs],
        [n.status for n in logs],
        [n.attempt for n in logs],
        [n.node_type for n in logs],
        [n.input_json for n in logs],
        [n.output_json for n in logs],
        [_json_or_empty(n.error) for n in logs],
        [n.started_at for n in logs],
        [n.finished_at for n in logs],
        [n.duration_us for n in logs],
        [_json_or_empty(n.token_usage) for n in logs],
        [s.node_id for s in closing],
        [scope_key(s.scope) for s in closing],
    ]
