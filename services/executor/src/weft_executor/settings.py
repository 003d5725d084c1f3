"""Executor settings: ``WEFT_*`` environment variables, read once in ``__main__``."""

from __future__ import annotations

from weft_common.settings import CommonSettings

__all__ = ["ExecutorSettings"]


class ExecutorSettings(CommonSettings):
    port: int = 50052
    # Identity of this worker in leases; empty: hostname-pid-random.
    worker_id: str = ""
    # Per-execution and per-worker bounds on concurrently running nodes (SPEC section 4: a fan-out
    # of 256 I/O-bound branches runs at once).
    max_concurrency_per_execution: int = 256
    max_concurrency_per_worker: int = 2048
    # Executions one worker runs at once.
    max_executions_per_worker: int = 512
    # Expressions (JSONata): bounds on one evaluation.
    expression_timeout_ms: int = 1000
    expression_max_depth: int = 200
    # HTTP/LLM nodes.
    http_max_response_bytes: int = 10 * 1024 * 1024
    http_default_timeout_ms: int = 30_000
    # A `wait` longer than this parks the execution durably instead of holding the worker.
    durable_wait_threshold_ms: int = 30_000
    # Leases and heartbeats with the state service.
    lease_ms: int = 15_000
    heartbeat_ms: int = 3_000
    claim_poll_ms: int = 250
    # Events not tied to a step (node:started, stream:chunk) are flushed at least this often.
    event_flush_ms: int = 20
    # Cross-execution group commit: commit RPCs a worker keeps in flight; the commits that come
    # meanwhile wait and go together in one CommitSteps call (one transaction).
    commit_max_in_flight: int = 2
    # Sub-workflows nest at most this deep.
    max_subworkflow_depth: int = 16
