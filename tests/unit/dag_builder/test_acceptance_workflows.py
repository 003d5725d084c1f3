"""The acceptance cases' workflows (../shared/acceptance/cases) compile, or are rejected naming the
nodes the case expects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from weft_common.compiled import dag_to_proto
from weft_common.errors import InvalidArgument
from weft_common.workflow import definition_from_json
from weft_dag_builder import compile_workflow, validate_workflow

CASES_DIR = Path(__file__).resolve().parents[4] / "shared" / "acceptance" / "cases"
CASES = sorted(CASES_DIR.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_cases_are_present() -> None:
    assert len(CASES) >= 19, f"acceptance cases not found under {CASES_DIR}"


@pytest.mark.parametrize("path", [p for p in CASES if not _load(p).get("invalid")], ids=lambda p: p.stem)
def test_valid_case_compiles_deterministically(path: Path) -> None:
    defn = definition_from_json(_load(path)["workflow"])
    assert validate_workflow(defn) == []
    dag = compile_workflow(defn)
    assert set(dag.nodes) == {n.id for n in defn.nodes}
    first = dag_to_proto(dag).SerializeToString(deterministic=True)
    again = dag_to_proto(compile_workflow(defn)).SerializeToString(deterministic=True)
    assert first == again


@pytest.mark.parametrize("path", [p for p in CASES if _load(p).get("invalid")], ids=lambda p: p.stem)
def test_invalid_case_is_rejected_naming_the_nodes(path: Path) -> None:
    case = _load(path)
    defn = definition_from_json(case["workflow"])
    named = {d.node_id for d in validate_workflow(defn)}
    for node_id in case.get("diagnosticNodeIds", []):
        assert node_id in named
    if case.get("diagnosticAnyNodeIds"):
        assert named & set(case["diagnosticAnyNodeIds"])
    with pytest.raises(InvalidArgument) as err:
        compile_workflow(defn)
    listed = err.value.details["diagnostics"]
    assert listed and all({"code", "message"} <= set(d) for d in listed)
    assert named == {d.get("nodeId", "") for d in listed}
