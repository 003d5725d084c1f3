"""Operator settings (SPEC section 7): one pydantic-settings object per service, ``WEFT_*`` env vars.

``CommonSettings`` holds what every service reads; each service subclasses it with its own fields
and builds it once in ``__main__`` (never reading the environment anywhere else).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CommonSettings", "env_name_allowed"]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEFT_", extra="ignore")

    # Embedded mode: one process, SQLite, in-process event bus, loopback only.
    embedded: bool = False
    data_dir: str = ".weft"
    database_url: str = ""  # empty: sqlite+aiosqlite:///<data_dir>/weft.db
    redis_url: str = ""  # empty: in-process fan-out

    host: str = "127.0.0.1"
    # gRPC addresses of the services (host:port).
    dag_builder_addr: str = "127.0.0.1:50051"
    executor_addr: str = "127.0.0.1:50052"
    state_addr: str = "127.0.0.1:50053"
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    grpc_shutdown_grace_s: float = 10.0
    # Clients ping idle connections this often (dead peers are noticed); servers accept it.
    grpc_keepalive_ms: int = 30_000

    log_level: str = "INFO"
    log_json: bool = False
    # Prometheus scrape endpoint (``/metrics`` on ``host:metrics_port``); 0 = off.
    metrics_port: int = 0

    env_allow: str = ""  # comma list; an entry ending in "_" or "*" is a prefix
    http_allow_private: bool | None = None  # None: true in embedded mode, false otherwise
    max_output_bytes: int = 4 * 1024 * 1024

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir}/weft.db"

    def allow_private(self) -> bool:
        return self.embedded if self.http_allow_private is None else self.http_allow_private

    def env_allow_list(self) -> tuple[str, ...]:
        return tuple(x.strip() for x in self.env_allow.split(",") if x.strip())


def env_name_allowed(name: str, allow: tuple[str, ...]) -> bool:
    """True when ``name`` is listed, or starts with a listed prefix (entry ending in ``_`` or ``*``)."""
    for entry in allow:
        if entry.endswith("*"):
            if name.startswith(entry[:-1]):
                return True
        elif entry.endswith("_"):
            if name.startswith(entry):
                return True
        elif name == entry:
            return True
    return False


# Re-exported for services that declare their own fields.
SettingsField = Field
