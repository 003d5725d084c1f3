import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from weft.workflow.v1 import workflow_pb2 as _workflow_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowVersion(_message.Message):
    __slots__ = ("workflow_id", "version", "definition", "dag", "created_at", "owner")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    version: int
    definition: _workflow_pb2.WorkflowDefinition
    dag: _workflow_pb2.CompiledDag
    created_at: _timestamp_pb2.Timestamp
    owner: str
    def __init__(self, workflow_id: _Optional[str] = ..., version: _Optional[int] = ..., definition: _Optional[_Union[_workflow_pb2.WorkflowDefinition, _Mapping]] = ..., dag: _Optional[_Union[_workflow_pb2.CompiledDag, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ...) -> None: ...

class RegisterWorkflowRequest(_message.Message):
    __slots__ = ("definition", "dag", "owner")
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    definition: _workflow_pb2.WorkflowDefinition
    dag: _workflow_pb2.CompiledDag
    owner: str
    def __init__(self, definition: _Optional[_Union[_workflow_pb2.WorkflowDefinition, _Mapping]] = ..., dag: _Optional[_Union[_workflow_pb2.CompiledDag, _Mapping]] = ..., owner: _Optional[str] = ...) -> None: ...

class RegisterWorkflowResponse(_message.Message):
    __slots__ = ("workflow_id", "version")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    version: int
    def __init__(self, workflow_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "version", "owner")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    version: int
    owner: str
    def __init__(self, workflow_id: _Optional[str] = ..., version: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class GetWorkflowResponse(_message.Message):
    __slots__ = ("workflow",)
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    workflow: WorkflowVersion
    def __init__(self, workflow: _Optional[_Union[WorkflowVersion, _Mapping]] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("owner",)
    OWNER_FIELD_NUMBER: _ClassVar[int]
    owner: str
    def __init__(self, owner: _Optional[str] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows",)
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowVersion]
    def __init__(self, workflows: _Optional[_Iterable[_Union[WorkflowVersion, _Mapping]]] = ...) -> None: ...

class CreateExecutionRequest(_message.Message):
    __slots__ = ("workflow_id", "workflow_version", "definition", "dag", "input_json", "idempotency_key", "owner", "parent_execution_id", "parent_node_id", "depth", "claim_worker_id", "lease_ms", "load", "trace_context")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PARENT_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    CLAIM_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    workflow_version: int
    definition: _workflow_pb2.WorkflowDefinition
    dag: _workflow_pb2.CompiledDag
    input_json: str
    idempotency_key: str
    owner: str
    parent_execution_id: str
    parent_node_id: str
    depth: int
    claim_worker_id: str
    lease_ms: int
    load: bool
    trace_context: str
    def __init__(self, workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., definition: _Optional[_Union[_workflow_pb2.WorkflowDefinition, _Mapping]] = ..., dag: _Optional[_Union[_workflow_pb2.CompiledDag, _Mapping]] = ..., input_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., owner: _Optional[str] = ..., parent_execution_id: _Optional[str] = ..., parent_node_id: _Optional[str] = ..., depth: _Optional[int] = ..., claim_worker_id: _Optional[str] = ..., lease_ms: _Optional[int] = ..., load: _Optional[bool] = ..., trace_context: _Optional[str] = ...) -> None: ...

class CreateExecutionResponse(_message.Message):
    __slots__ = ("execution_id", "existing", "lease", "loaded")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    existing: bool
    lease: Lease
    loaded: LoadExecutionResponse
    def __init__(self, execution_id: _Optional[str] = ..., existing: _Optional[bool] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ..., loaded: _Optional[_Union[LoadExecutionResponse, _Mapping]] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("execution_id", "owner")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    owner: str
    def __init__(self, execution_id: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class GetExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: _workflow_pb2.Execution
    def __init__(self, execution: _Optional[_Union[_workflow_pb2.Execution, _Mapping]] = ...) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("owner", "workflow_id", "limit")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    owner: str
    workflow_id: str
    limit: int
    def __init__(self, owner: _Optional[str] = ..., workflow_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions",)
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.Execution]
    def __init__(self, executions: _Optional[_Iterable[_Union[_workflow_pb2.Execution, _Mapping]]] = ...) -> None: ...

class ListNodeLogsRequest(_message.Message):
    __slots__ = ("execution_id", "owner")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    owner: str
    def __init__(self, execution_id: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ListNodeLogsResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.NodeLog]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_workflow_pb2.NodeLog, _Mapping]]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("execution_id", "worker_id", "token", "expires_at")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    worker_id: str
    token: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, execution_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClaimExecutionsRequest(_message.Message):
    __slots__ = ("worker_id", "max", "lease_ms", "wait_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    max: int
    lease_ms: int
    wait_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., max: _Optional[int] = ..., lease_ms: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class ClaimExecutionsResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class RenewLeasesRequest(_message.Message):
    __slots__ = ("worker_id", "leases", "lease_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    lease_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class RenewLeasesResponse(_message.Message):
    __slots__ = ("lost_execution_ids", "cancel_execution_ids", "resumed_execution_ids")
    LOST_EXECUTION_IDS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_EXECUTION_IDS_FIELD_NUMBER: _ClassVar[int]
    RESUMED_EXECUTION_IDS_FIELD_NUMBER: _ClassVar[int]
    lost_execution_ids: _containers.RepeatedScalarFieldContainer[str]
    cancel_execution_ids: _containers.RepeatedScalarFieldContainer[str]
    resumed_execution_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lost_execution_ids: _Optional[_Iterable[str]] = ..., cancel_execution_ids: _Optional[_Iterable[str]] = ..., resumed_execution_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseLeaseRequest(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class ReleaseLeaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadExecutionRequest(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class StepRecord(_message.Message):
    __slots__ = ("key", "node_id", "scope", "status", "output_json", "error", "fired_handles", "data_json", "step_seq")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FIRED_HANDLES_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    STEP_SEQ_FIELD_NUMBER: _ClassVar[int]
    key: str
    node_id: str
    scope: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.ScopeEntry]
    status: _workflow_pb2.NodeStatus
    output_json: str
    error: _workflow_pb2.ExecutionError
    fired_handles: _containers.RepeatedScalarFieldContainer[str]
    data_json: str
    step_seq: int
    def __init__(self, key: _Optional[str] = ..., node_id: _Optional[str] = ..., scope: _Optional[_Iterable[_Union[_workflow_pb2.ScopeEntry, _Mapping]]] = ..., status: _Optional[_Union[_workflow_pb2.NodeStatus, str]] = ..., output_json: _Optional[str] = ..., error: _Optional[_Union[_workflow_pb2.ExecutionError, _Mapping]] = ..., fired_handles: _Optional[_Iterable[str]] = ..., data_json: _Optional[str] = ..., step_seq: _Optional[int] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("resume_id", "node_id", "scope", "input_json", "enqueued_at")
    RESUME_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    resume_id: str
    node_id: str
    scope: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.ScopeEntry]
    input_json: str
    enqueued_at: _timestamp_pb2.Timestamp
    def __init__(self, resume_id: _Optional[str] = ..., node_id: _Optional[str] = ..., scope: _Optional[_Iterable[_Union[_workflow_pb2.ScopeEntry, _Mapping]]] = ..., input_json: _Optional[str] = ..., enqueued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LoadExecutionResponse(_message.Message):
    __slots__ = ("execution", "dag", "steps", "variables_json", "resumes", "version", "cancel_requested", "depth", "trace_context")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    DAG_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_JSON_FIELD_NUMBER: _ClassVar[int]
    RESUMES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    execution: _workflow_pb2.Execution
    dag: _workflow_pb2.CompiledDag
    steps: _containers.RepeatedCompositeFieldContainer[StepRecord]
    variables_json: str
    resumes: _containers.RepeatedCompositeFieldContainer[ResumeRequest]
    version: int
    cancel_requested: bool
    depth: int
    trace_context: str
    def __init__(self, execution: _Optional[_Union[_workflow_pb2.Execution, _Mapping]] = ..., dag: _Optional[_Union[_workflow_pb2.CompiledDag, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[StepRecord, _Mapping]]] = ..., variables_json: _Optional[str] = ..., resumes: _Optional[_Iterable[_Union[ResumeRequest, _Mapping]]] = ..., version: _Optional[int] = ..., cancel_requested: _Optional[bool] = ..., depth: _Optional[int] = ..., trace_context: _Optional[str] = ...) -> None: ...

class EventDraft(_message.Message):
    __slots__ = ("type", "node_id", "scope", "timestamp", "payload_json")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    type: str
    node_id: str
    scope: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.ScopeEntry]
    timestamp: _timestamp_pb2.Timestamp
    payload_json: str
    def __init__(self, type: _Optional[str] = ..., node_id: _Optional[str] = ..., scope: _Optional[_Iterable[_Union[_workflow_pb2.ScopeEntry, _Mapping]]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payload_json: _Optional[str] = ...) -> None: ...

class ControlState(_message.Message):
    __slots__ = ("status", "variables_json", "outputs_json", "error", "paused_nodes", "applied_resume_ids", "token_usage", "wake_at", "release_lease")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PAUSED_NODES_FIELD_NUMBER: _ClassVar[int]
    APPLIED_RESUME_IDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_USAGE_FIELD_NUMBER: _ClassVar[int]
    WAKE_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_LEASE_FIELD_NUMBER: _ClassVar[int]
    status: _workflow_pb2.ExecutionStatus
    variables_json: str
    outputs_json: str
    error: _workflow_pb2.ExecutionError
    paused_nodes: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.PausedNode]
    applied_resume_ids: _containers.RepeatedScalarFieldContainer[str]
    token_usage: _workflow_pb2.TokenUsage
    wake_at: _timestamp_pb2.Timestamp
    release_lease: bool
    def __init__(self, status: _Optional[_Union[_workflow_pb2.ExecutionStatus, str]] = ..., variables_json: _Optional[str] = ..., outputs_json: _Optional[str] = ..., error: _Optional[_Union[_workflow_pb2.ExecutionError, _Mapping]] = ..., paused_nodes: _Optional[_Iterable[_Union[_workflow_pb2.PausedNode, _Mapping]]] = ..., applied_resume_ids: _Optional[_Iterable[str]] = ..., token_usage: _Optional[_Union[_workflow_pb2.TokenUsage, _Mapping]] = ..., wake_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., release_lease: _Optional[bool] = ...) -> None: ...

class CommitStepRequest(_message.Message):
    __slots__ = ("lease", "expected_version", "steps", "node_logs", "events", "control")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    NODE_LOGS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    expected_version: int
    steps: _containers.RepeatedCompositeFieldContainer[StepRecord]
    node_logs: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.NodeLog]
    events: _containers.RepeatedCompositeFieldContainer[EventDraft]
    control: ControlState
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., expected_version: _Optional[int] = ..., steps: _Optional[_Iterable[_Union[StepRecord, _Mapping]]] = ..., node_logs: _Optional[_Iterable[_Union[_workflow_pb2.NodeLog, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[EventDraft, _Mapping]]] = ..., control: _Optional[_Union[ControlState, _Mapping]] = ...) -> None: ...

class CommitStepResponse(_message.Message):
    __slots__ = ("version", "last_seq")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    version: int
    last_seq: int
    def __init__(self, version: _Optional[int] = ..., last_seq: _Optional[int] = ...) -> None: ...

class CommitStepsRequest(_message.Message):
    __slots__ = ("commits",)
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    commits: _containers.RepeatedCompositeFieldContainer[CommitStepRequest]
    def __init__(self, commits: _Optional[_Iterable[_Union[CommitStepRequest, _Mapping]]] = ...) -> None: ...

class CommitStepOutcome(_message.Message):
    __slots__ = ("response", "code", "message", "details_json")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    response: CommitStepResponse
    code: int
    message: str
    details_json: str
    def __init__(self, response: _Optional[_Union[CommitStepResponse, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class CommitStepsResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[CommitStepOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[CommitStepOutcome, _Mapping]]] = ...) -> None: ...

class CommitStreamRequest(_message.Message):
    __slots__ = ("commits", "traceparent", "tracestate")
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    commits: _containers.RepeatedCompositeFieldContainer[CommitStepRequest]
    traceparent: str
    tracestate: str
    def __init__(self, commits: _Optional[_Iterable[_Union[CommitStepRequest, _Mapping]]] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class CommitStreamResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[CommitStepOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[CommitStepOutcome, _Mapping]]] = ...) -> None: ...

class LiveEvent(_message.Message):
    __slots__ = ("seq", "event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    event: EventDraft
    def __init__(self, seq: _Optional[int] = ..., event: _Optional[_Union[EventDraft, _Mapping]] = ...) -> None: ...

class PublishLiveEventsRequest(_message.Message):
    __slots__ = ("lease", "events")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    events: _containers.RepeatedCompositeFieldContainer[LiveEvent]
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., events: _Optional[_Iterable[_Union[LiveEvent, _Mapping]]] = ...) -> None: ...

class PublishLiveEventsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("execution_id", "after_seq", "owner", "follow_after_terminal")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_AFTER_TERMINAL_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    after_seq: int
    owner: str
    follow_after_terminal: bool
    def __init__(self, execution_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., owner: _Optional[str] = ..., follow_after_terminal: _Optional[bool] = ...) -> None: ...

class StreamEventsResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _workflow_pb2.Event
    def __init__(self, event: _Optional[_Union[_workflow_pb2.Event, _Mapping]] = ...) -> None: ...

class EnqueueResumeRequest(_message.Message):
    __slots__ = ("execution_id", "node_id", "scope", "input_json", "owner")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    node_id: str
    scope: _containers.RepeatedCompositeFieldContainer[_workflow_pb2.ScopeEntry]
    input_json: str
    owner: str
    def __init__(self, execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., scope: _Optional[_Iterable[_Union[_workflow_pb2.ScopeEntry, _Mapping]]] = ..., input_json: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class EnqueueResumeResponse(_message.Message):
    __slots__ = ("resume_id",)
    RESUME_ID_FIELD_NUMBER: _ClassVar[int]
    resume_id: str
    def __init__(self, resume_id: _Optional[str] = ...) -> None: ...

class RequestCancelRequest(_message.Message):
    __slots__ = ("execution_id", "reason", "owner")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    reason: str
    owner: str
    def __init__(self, execution_id: _Optional[str] = ..., reason: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class RequestCancelResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _workflow_pb2.ExecutionStatus
    def __init__(self, status: _Optional[_Union[_workflow_pb2.ExecutionStatus, str]] = ...) -> None: ...
