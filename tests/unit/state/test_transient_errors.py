"""Which database errors are worth a retry (UNAVAILABLE) and which are bugs (INTERNAL)."""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError

from weft_state.database import is_transient_error


def test_lost_connections_and_lost_races_are_transient() -> None:
    assert is_transient_error(ConnectionRefusedError())
    assert is_transient_error(asyncpg.ConnectionDoesNotExistError("gone"))
    assert is_transient_error(asyncpg.AdminShutdownError("restart"))
    assert is_transient_error(asyncpg.DeadlockDetectedError("deadlock"))
    assert is_transient_error(asyncpg.SerializationError("serialization"))
    assert is_transient_error(sqlite3.OperationalError("database is locked"))
    wrapped = DBAPIError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))
    assert is_transient_error(wrapped)


def test_bugs_and_bad_data_are_not() -> None:
    assert not is_transient_error(ValueError("bad"))
    assert not is_transient_error(asyncpg.UniqueViolationError("dup"))
    assert not is_transient_error(asyncpg.StringDataRightTruncationError("too long"))
    assert not is_transient_error(sqlite3.OperationalError("no such table: executions"))
    assert not is_transient_error(IntegrityError("INSERT", {}, sqlite3.IntegrityError("NOT NULL")))
