import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HANDLE_KIND_UNSPECIFIED: _ClassVar[HandleKind]
    HANDLE_KIND_OUT: _ClassVar[HandleKind]
    HANDLE_KIND_ERROR: _ClassVar[HandleKind]
    HANDLE_KIND_CONDITION: _ClassVar[HandleKind]
    HANDLE_KIND_ROUTE: _ClassVar[HandleKind]

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PENDING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_RUNNING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PAUSED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_SUCCEEDED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_CANCELLED: _ClassVar[ExecutionStatus]

class NodeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATUS_UNSPECIFIED: _ClassVar[NodeStatus]
    NODE_STATUS_RUNNING: _ClassVar[NodeStatus]
    NODE_STATUS_SUCCEEDED: _ClassVar[NodeStatus]
    NODE_STATUS_FAILED: _ClassVar[NodeStatus]
    NODE_STATUS_SKIPPED: _ClassVar[NodeStatus]
    NODE_STATUS_PAUSED: _ClassVar[NodeStatus]
    NODE_STATUS_CANCELLED: _ClassVar[NodeStatus]
HANDLE_KIND_UNSPECIFIED: HandleKind
HANDLE_KIND_OUT: HandleKind
HANDLE_KIND_ERROR: HandleKind
HANDLE_KIND_CONDITION: HandleKind
HANDLE_KIND_ROUTE: HandleKind
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_PENDING: ExecutionStatus
EXECUTION_STATUS_RUNNING: ExecutionStatus
EXECUTION_STATUS_PAUSED: ExecutionStatus
EXECUTION_STATUS_SUCCEEDED: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_CANCELLED: ExecutionStatus
NODE_STATUS_UNSPECIFIED: NodeStatus
NODE_STATUS_RUNNING: NodeStatus
NODE_STATUS_SUCCEEDED: NodeStatus
NODE_STATUS_FAILED: NodeStatus
NODE_STATUS_SKIPPED: NodeStatus
NODE_STATUS_PAUSED: NodeStatus
NODE_STATUS_CANCELLED: NodeStatus

class WorkflowDefinition(_message.Message):
    __slots__ = ("id", "name", "input_schema", "variables", "nodes", "edges", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    input_schema: _struct_pb2.Struct
    variables: _struct_pb2.Struct
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    description: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., variables: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., description: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "type", "name", "parent", "config", "retry", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    name: str
    parent: str
    config: _struct_pb2.Struct
    retry: RetryPolicy
    timeout_ms: int
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., name: _Optional[str] = ..., parent: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "initial_interval_ms", "backoff_coefficient", "max_interval_ms")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    initial_interval_ms: int
    backoff_coefficient: float
    max_interval_ms: int
    def __init__(self, max_attempts: _Optional[int] = ..., initial_interval_ms: _Optional[int] = ..., backoff_coefficient: _Optional[float] = ..., max_interval_ms: _Optional[int] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("id", "source", "target", "source_handle")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HANDLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    target: str
    source_handle: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., target: _Optional[str] = ..., source_handle: _Optional[str] = ...) -> None: ...

class Diagnostic(_message.Message):
    __slots__ = ("code", "message", "node_id", "edge_id", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    node_id: str
    edge_id: str
    field: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class CompiledEdge(_message.Message):
    __slots__ = ("index", "id", "source", "target", "handle_kind", "handle_value")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    HANDLE_KIND_FIELD_NUMBER: _ClassVar[int]
    HANDLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    source: str
    target: str
    handle_kind: HandleKind
    handle_value: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., source: _Optional[str] = ..., target: _Optional[str] = ..., handle_kind: _Optional[_Union[HandleKind, str]] = ..., handle_value: _Optional[str] = ...) -> None: ...

class CompiledNode(_message.Message):
    __slots__ = ("id", "type", "name", "parent", "config_json", "retry", "timeout_ms", "incoming", "outgoing", "depth", "topo_index", "readers", "references", "children", "entries", "exits")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    INCOMING_FIELD_NUMBER: _ClassVar[int]
    OUTGOING_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    TOPO_INDEX_FIELD_NUMBER: _ClassVar[int]
    READERS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    EXITS_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    name: str
    parent: str
    config_json: str
    retry: RetryPolicy
    timeout_ms: int
    incoming: _containers.RepeatedScalarFieldContainer[int]
    outgoing: _containers.RepeatedScalarFieldContainer[int]
    depth: int
    topo_index: int
    readers: _containers.RepeatedScalarFieldContainer[str]
    references: _containers.RepeatedScalarFieldContainer[str]
    children: _containers.RepeatedScalarFieldContainer[str]
    entries: _containers.RepeatedScalarFieldContainer[str]
    exits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., name: _Optional[str] = ..., parent: _Optional[str] = ..., config_json: _Optional[str] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., incoming: _Optional[_Iterable[int]] = ..., outgoing: _Optional[_Iterable[int]] = ..., depth: _Optional[int] = ..., topo_index: _Optional[int] = ..., readers: _Optional[_Iterable[str]] = ..., references: _Optional[_Iterable[str]] = ..., children: _Optional[_Iterable[str]] = ..., entries: _Optional[_Iterable[str]] = ..., exits: _Optional[_Iterable[str]] = ...) -> None: ...

class CompiledDag(_message.Message):
    __slots__ = ("workflow_id", "start_node", "nodes", "edges", "top_level", "input_schema_json", "variables_json", "output_nodes", "definition_hash")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    START_NODE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    TOP_LEVEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NODES_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HASH_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    start_node: str
    nodes: _containers.RepeatedCompositeFieldContainer[CompiledNode]
    edges: _containers.RepeatedCompositeFieldContainer[CompiledEdge]
    top_level: _containers.RepeatedScalarFieldContainer[str]
    input_schema_json: str
    variables_json: str
    output_nodes: _containers.RepeatedScalarFieldContainer[str]
    definition_hash: str
    def __init__(self, workflow_id: _Optional[str] = ..., start_node: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[CompiledNode, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[CompiledEdge, _Mapping]]] = ..., top_level: _Optional[_Iterable[str]] = ..., input_schema_json: _Optional[str] = ..., variables_json: _Optional[str] = ..., output_nodes: _Optional[_Iterable[str]] = ..., definition_hash: _Optional[str] = ...) -> None: ...

class ScopeEntry(_message.Message):
    __slots__ = ("container", "index")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    container: str
    index: int
    def __init__(self, container: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class ExecutionError(_message.Message):
    __slots__ = ("message", "code", "node_id", "status", "details_json")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    message: str
    code: str
    node_id: str
    status: int
    details_json: str
    def __init__(self, message: _Optional[str] = ..., code: _Optional[str] = ..., node_id: _Optional[str] = ..., status: _Optional[int] = ..., details_json: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "type", "execution_id", "timestamp", "node_id", "scope", "payload_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    type: str
    execution_id: str
    timestamp: _timestamp_pb2.Timestamp
    node_id: str
    scope: _containers.RepeatedCompositeFieldContainer[ScopeEntry]
    payload_json: str
    def __init__(self, seq: _Optional[int] = ..., type: _Optional[str] = ..., execution_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_id: _Optional[str] = ..., scope: _Optional[_Iterable[_Union[ScopeEntry, _Mapping]]] = ..., payload_json: _Optional[str] = ...) -> None: ...

class PausedNode(_message.Message):
    __slots__ = ("node_id", "scope", "reason", "input_schema_json", "wake_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    WAKE_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    scope: _containers.RepeatedCompositeFieldContainer[ScopeEntry]
    reason: str
    input_schema_json: str
    wake_at: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., scope: _Optional[_Iterable[_Union[ScopeEntry, _Mapping]]] = ..., reason: _Optional[str] = ..., input_schema_json: _Optional[str] = ..., wake_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class NodeLog(_message.Message):
    __slots__ = ("node_id", "scope", "status", "attempt", "input_json", "output_json", "error", "started_at", "finished_at", "duration_us", "token_usage", "node_type")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    TOKEN_USAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    scope: _containers.RepeatedCompositeFieldContainer[ScopeEntry]
    status: NodeStatus
    attempt: int
    input_json: str
    output_json: str
    error: ExecutionError
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    duration_us: int
    token_usage: TokenUsage
    node_type: str
    def __init__(self, node_id: _Optional[str] = ..., scope: _Optional[_Iterable[_Union[ScopeEntry, _Mapping]]] = ..., status: _Optional[_Union[NodeStatus, str]] = ..., attempt: _Optional[int] = ..., input_json: _Optional[str] = ..., output_json: _Optional[str] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_us: _Optional[int] = ..., token_usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., node_type: _Optional[str] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "estimated")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    estimated: bool
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., estimated: _Optional[bool] = ...) -> None: ...

class Execution(_message.Message):
    __slots__ = ("execution_id", "workflow_id", "workflow_version", "status", "input_json", "outputs_json", "error", "paused_nodes", "created_at", "started_at", "finished_at", "parent_execution_id", "owner", "token_usage", "last_seq")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PAUSED_NODES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PARENT_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_USAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    workflow_id: str
    workflow_version: int
    status: ExecutionStatus
    input_json: str
    outputs_json: str
    error: ExecutionError
    paused_nodes: _containers.RepeatedCompositeFieldContainer[PausedNode]
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    parent_execution_id: str
    owner: str
    token_usage: TokenUsage
    last_seq: int
    def __init__(self, execution_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., input_json: _Optional[str] = ..., outputs_json: _Optional[str] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., paused_nodes: _Optional[_Iterable[_Union[PausedNode, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parent_execution_id: _Optional[str] = ..., owner: _Optional[str] = ..., token_usage: _Optional[_Union[TokenUsage, _Mapping]] = ..., last_seq: _Optional[int] = ...) -> None: ...
