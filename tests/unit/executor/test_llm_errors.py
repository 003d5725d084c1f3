"""Provider failure mapping: Retry-After parsing, status codes, redaction."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from weft_executor.llm import errors


@pytest.mark.parametrize(
    ("headers", "ms"),
    [
        ({"Retry-After": "3"}, 3000),
        ({"Retry-After": "0.25"}, 250),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1500),  # OpenAI's precise header wins
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_ms(headers: dict[str, str], ms: int | None) -> None:
    assert errors.retry_after_ms(httpx.Headers(headers)) == ms


def test_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert errors.retry_after_ms(httpx.Headers({"Retry-After": date}), now=now) == 7000


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (401, "LLM_AUTH", False),
        (403, "LLM_AUTH", False),
        (429, "LLM_RATE_LIMITED", True),
        (408, "LLM_UPSTREAM", True),
        (500, "LLM_UPSTREAM", True),
        (503, "LLM_UPSTREAM", True),
        (400, "LLM_BAD_REQUEST", False),
        (422, "LLM_BAD_REQUEST", False),
    ],
)
def test_status_codes(status: int, code: str, retryable: bool) -> None:
    f = errors.status_failure("n", status, httpx.Headers(), b'{"error": {"message": "m"}}', "")
    assert (f.code, f.status, f.retryable) == (code, status, retryable)
    assert f.message == f"llm node 'n': provider answered HTTP {status}: m"


def test_provider_message_falls_back_to_the_body_and_redacts() -> None:
    assert errors.provider_message(b"upstream sk-abcdef exploded", "sk-abcdef") == (
        "upstream *** exploded")
    long = errors.provider_message(b"x" * 1000, "")
    assert len(long) == 301 and long.endswith("…")
