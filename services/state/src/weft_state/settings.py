"""State service settings: ``WEFT_*`` environment variables, read once in ``__main__``."""

from __future__ import annotations

from weft_common.settings import CommonSettings

__all__ = ["StateSettings"]


class StateSettings(CommonSettings):
    port: int = 50053
    # PostgreSQL connection pool (asyncpg).
    db_pool_size: int = 20
    db_max_overflow: int = 20
    # A stream with no live event polls the database this often (the fallback when Redis is down
    # or a publish was missed).
    stream_poll_ms: int = 1000
    # Long-polling claimers re-check the database at least this often (lease expiry, wake-ups).
    claim_poll_ms: int = 250
    # A resume for a node that is not paused (yet) in a running execution waits this long for the
    # pause to be committed before it is refused.
    resume_wait_ms: int = 5000
    # Per-subscriber buffer of live events; on overflow the stream re-reads from the database.
    stream_buffer: int = 10_000
    # Prefix of the Redis channels (several deployments or test sessions on one Redis).
    redis_prefix: str = ""
