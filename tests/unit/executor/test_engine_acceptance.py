"""The acceptance cases (../shared/acceptance/cases) played in-process through the real engine,
the real handlers and the real dag-builder, with run.py's own fake upstream and checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.engine import acceptance_runner, fake_upstream, load_case, play_case

CASES = [
    "01_linear", "02_templates", "03_condition_join", "04_router", "05_error_route",
    "06_error_unrouted", "07_retry_http", "08_loop_for", "09_loop_foreach",
    "10_loop_while_vars", "11_parallel_collection", "12_parallel_overlap", "13_nested",
    "14_approval", "17_llm_stream", "18_http_echo", "19_cancel",
]


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with fake_upstream() as url:
        yield url


@pytest.mark.parametrize("name", CASES)
async def test_acceptance_case(name: str, fake_url: str) -> None:
    runs = await play_case(load_case(name, fake_url), fake_url)
    assert runs and all(r.outcome is not None for r in runs)


async def test_http_idempotency_key_is_execution_and_node_scoped(fake_url: str) -> None:
    runner = acceptance_runner()
    runner.Fake.idempotency_keys.clear()
    runner.Fake.flaky_counts.clear()
    runs = await play_case(load_case("07_retry_http", fake_url), fake_url)
    keys = list(runner.Fake.idempotency_keys)
    assert keys == [f"{runs[0].store.execution_id}:fetch"] * 3  # the same key on every attempt
