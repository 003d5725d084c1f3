"""Resume input against the paused node's inputSchema: messages that name node and path."""

from __future__ import annotations

import pytest

from weft_common import jsonutil
from weft_common.errors import InvalidArgument
from weft_state.resumes import validate_resume_input

SCHEMA = jsonutil.dumps({
    "type": "object", "required": ["approved"],
    "properties": {"approved": {"type": "boolean"}, "items": {"type": "array", "items": {"type": "integer"}}},
})


def test_valid_input_and_no_schema_pass() -> None:
    validate_resume_input("approve", SCHEMA, {"approved": True, "by": "ops"})
    validate_resume_input("approve", "", "anything")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"approved": "yes"}, r"node 'approve'.* at /approved: 'yes' is not of type 'boolean'"),
        ({}, r"node 'approve'.*: 'approved' is a required property"),
        ({"approved": True, "items": [1, "x"]}, r"at /items/1: 'x' is not of type 'integer'"),
        (None, r"None is not of type 'object'"),
    ],
)
def test_invalid_input_names_node_path_and_problem(value: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        validate_resume_input("approve", SCHEMA, value)
    assert info.value.details["nodeId"] == "approve"


def test_a_broken_schema_is_reported_as_such() -> None:
    with pytest.raises(InvalidArgument, match="invalid inputSchema"):
        validate_resume_input("approve", '{"type": 12}', {})
