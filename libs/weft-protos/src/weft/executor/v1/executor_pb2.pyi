from weft.workflow.v1 import workflow_pb2 as _workflow_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartExecutionRequest(_message.Message):
    __slots__ = ("workflow_id", "workflow_version", "workflow", "input_json", "idempotency_key", "owner", "parent_execution_id", "parent_node_id", "depth")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PARENT_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    workflow_version: int
    workflow: _workflow_pb2.WorkflowDefinition
    input_json: str
    idempotency_key: str
    owner: str
    parent_execution_id: str
    parent_node_id: str
    depth: int
    def __init__(self, workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., workflow: _Optional[_Union[_workflow_pb2.WorkflowDefinition, _Mapping]] = ..., input_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., owner: _Optional[str] = ..., parent_execution_id: _Optional[str] = ..., parent_node_id: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class StartExecutionResponse(_message.Message):
    __slots__ = ("execution_id", "existing")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    existing: bool
    def __init__(self, execution_id: _Optional[str] = ..., existing: _Optional[bool] = ...) -> None: ...

class ResumeExecutionRequest(_message.Message):
    __slots__ = ("execution_id", "node_id", "scope", "input_json")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    node_id: str
    scope: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.ScopeEntry]
    input_json: str
    def __init__(self, execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., scope: _Optional[_Iterable[_Union[_workflow_pb2.ScopeEntry, _Mapping]]] = ..., input_json: _Optional[str] = ...) -> None: ...

class ResumeExecutionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("execution_id", "reason")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    reason: str
    def __init__(self, execution_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelExecutionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamExecutionEventsRequest(_message.Message):
    __slots__ = ("execution_id", "after_seq")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    after_seq: int
    def __init__(self, execution_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class StreamExecutionEventsResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _workflow_pb2.Event
    def __init__(self, event: _Optional[_Union[_workflow_pb2.Event, _Mapping]] = ...) -> None: ...
