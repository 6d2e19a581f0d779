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

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_TEXT_TO_IMAGE: _ClassVar[JobKind]
    JOB_KIND_UNDERSTAND: _ClassVar[JobKind]
    JOB_KIND_EDIT: _ClassVar[JobKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_CANCELLING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_EXPIRED: _ClassVar[JobState]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_TOKENIZE: _ClassVar[Stage]
    STAGE_DENOISE: _ClassVar[Stage]
    STAGE_DECODE: _ClassVar[Stage]
    STAGE_THINK: _ClassVar[Stage]

class GenerationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENERATION_MODE_UNSPECIFIED: _ClassVar[GenerationMode]
    GENERATION_MODE_NORMAL: _ClassVar[GenerationMode]
    GENERATION_MODE_THINKING: _ClassVar[GenerationMode]

class Decoder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECODER_UNSPECIFIED: _ClassVar[Decoder]
    DECODER_TURBO: _ClassVar[Decoder]
    DECODER_NORMAL: _ClassVar[Decoder]

class Remasking(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REMASKING_UNSPECIFIED: _ClassVar[Remasking]
    REMASKING_LOW_CONFIDENCE: _ClassVar[Remasking]
    REMASKING_TOP_K_MARGIN: _ClassVar[Remasking]
    REMASKING_NEG_ENTROPY: _ClassVar[Remasking]

class WebhookEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_EVENT_UNSPECIFIED: _ClassVar[WebhookEvent]
    WEBHOOK_EVENT_STARTED: _ClassVar[WebhookEvent]
    WEBHOOK_EVENT_PROGRESS: _ClassVar[WebhookEvent]
    WEBHOOK_EVENT_COMPLETED: _ClassVar[WebhookEvent]

class WebhookDeliveryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_DELIVERY_STATE_UNSPECIFIED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_PENDING: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_DELIVERED: _ClassVar[WebhookDeliveryState]
    WEBHOOK_DELIVERY_STATE_FAILED: _ClassVar[WebhookDeliveryState]
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_TEXT_TO_IMAGE: JobKind
JOB_KIND_UNDERSTAND: JobKind
JOB_KIND_EDIT: JobKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_CANCELLING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_EXPIRED: JobState
STAGE_UNSPECIFIED: Stage
STAGE_TOKENIZE: Stage
STAGE_DENOISE: Stage
STAGE_DECODE: Stage
STAGE_THINK: Stage
GENERATION_MODE_UNSPECIFIED: GenerationMode
GENERATION_MODE_NORMAL: GenerationMode
GENERATION_MODE_THINKING: GenerationMode
DECODER_UNSPECIFIED: Decoder
DECODER_TURBO: Decoder
DECODER_NORMAL: Decoder
REMASKING_UNSPECIFIED: Remasking
REMASKING_LOW_CONFIDENCE: Remasking
REMASKING_TOP_K_MARGIN: Remasking
REMASKING_NEG_ENTROPY: Remasking
WEBHOOK_EVENT_UNSPECIFIED: WebhookEvent
WEBHOOK_EVENT_STARTED: WebhookEvent
WEBHOOK_EVENT_PROGRESS: WebhookEvent
WEBHOOK_EVENT_COMPLETED: WebhookEvent
WEBHOOK_DELIVERY_STATE_UNSPECIFIED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_PENDING: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_DELIVERED: WebhookDeliveryState
WEBHOOK_DELIVERY_STATE_FAILED: WebhookDeliveryState

class SprintOptions(_message.Message):
    __slots__ = ("enabled", "keep_ratio", "cache_warmup_steps", "confidence_alpha", "image_keep_ratio", "text_keep_ratio", "threshold", "remasking")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    KEEP_RATIO_FIELD_NUMBER: _ClassVar[int]
    CACHE_WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_ALPHA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_KEEP_RATIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_KEEP_RATIO_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REMASKING_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    keep_ratio: float
    cache_warmup_steps: int
    confidence_alpha: float
    image_keep_ratio: float
    text_keep_ratio: float
    threshold: float
    remasking: Remasking
    def __init__(self, enabled: _Optional[bool] = ..., keep_ratio: _Optional[float] = ..., cache_warmup_steps: _Optional[int] = ..., confidence_alpha: _Optional[float] = ..., image_keep_ratio: _Optional[float] = ..., text_keep_ratio: _Optional[float] = ..., threshold: _Optional[float] = ..., remasking: _Optional[_Union[Remasking, str]] = ...) -> None: ...

class TextToImageParams(_message.Message):
    __slots__ = ("prompt", "width", "height", "steps", "cfg_scale", "block_length", "seed", "mode", "thinking_steps", "thinking_gen_length", "decoder", "decoder_steps", "resolution_multiplier", "sprint")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CFG_SCALE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    THINKING_STEPS_FIELD_NUMBER: _ClassVar[int]
    THINKING_GEN_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DECODER_FIELD_NUMBER: _ClassVar[int]
    DECODER_STEPS_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    SPRINT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    width: int
    height: int
    steps: int
    cfg_scale: float
    block_length: int
    seed: int
    mode: GenerationMode
    thinking_steps: int
    thinking_gen_length: int
    decoder: Decoder
    decoder_steps: int
    resolution_multiplier: int
    sprint: SprintOptions
    def __init__(self, prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., cfg_scale: _Optional[float] = ..., block_length: _Optional[int] = ..., seed: _Optional[int] = ..., mode: _Optional[_Union[GenerationMode, str]] = ..., thinking_steps: _Optional[int] = ..., thinking_gen_length: _Optional[int] = ..., decoder: _Optional[_Union[Decoder, str]] = ..., decoder_steps: _Optional[int] = ..., resolution_multiplier: _Optional[int] = ..., sprint: _Optional[_Union[SprintOptions, _Mapping]] = ...) -> None: ...

class UnderstandParams(_message.Message):
    __slots__ = ("image", "question", "gen_length", "steps", "block_length", "threshold", "sprint")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    GEN_LENGTH_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_LENGTH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SPRINT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    question: str
    gen_length: int
    steps: int
    block_length: int
    threshold: float
    sprint: SprintOptions
    def __init__(self, image: _Optional[bytes] = ..., question: _Optional[str] = ..., gen_length: _Optional[int] = ..., steps: _Optional[int] = ..., block_length: _Optional[int] = ..., threshold: _Optional[float] = ..., sprint: _Optional[_Union[SprintOptions, _Mapping]] = ...) -> None: ...

class EditParams(_message.Message):
    __slots__ = ("image", "instruction", "steps", "block_length", "cfg_text_scale", "cfg_image_scale", "decoder", "decoder_steps", "resolution_multiplier", "seed")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CFG_TEXT_SCALE_FIELD_NUMBER: _ClassVar[int]
    CFG_IMAGE_SCALE_FIELD_NUMBER: _ClassVar[int]
    DECODER_FIELD_NUMBER: _ClassVar[int]
    DECODER_STEPS_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    instruction: str
    steps: int
    block_length: int
    cfg_text_scale: float
    cfg_image_scale: float
    decoder: Decoder
    decoder_steps: int
    resolution_multiplier: int
    seed: int
    def __init__(self, image: _Optional[bytes] = ..., instruction: _Optional[str] = ..., steps: _Optional[int] = ..., block_length: _Optional[int] = ..., cfg_text_scale: _Optional[float] = ..., cfg_image_scale: _Optional[float] = ..., decoder: _Optional[_Union[Decoder, str]] = ..., decoder_steps: _Optional[int] = ..., resolution_multiplier: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class Webhook(_message.Message):
    __slots__ = ("url", "events")
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    url: str
    events: _containers.RepeatedScalarFieldContainer[WebhookEvent]
    def __init__(self, url: _Optional[str] = ..., events: _Optional[_Iterable[_Union[WebhookEvent, str]]] = ...) -> None: ...

class WebhookDelivery(_message.Message):
    __slots__ = ("id", "event", "state", "tries", "status_code", "error", "created_at", "next_try_at", "finished_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIES_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TRY_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    event: WebhookEvent
    state: WebhookDeliveryState
    tries: int
    status_code: int
    error: str
    created_at: _timestamp_pb2.Timestamp
    next_try_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., event: _Optional[_Union[WebhookEvent, str]] = ..., state: _Optional[_Union[WebhookDeliveryState, str]] = ..., tries: _Optional[int] = ..., status_code: _Optional[int] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_try_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("request_id", "priority", "webhook", "text_to_image", "understand", "edit")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    TEXT_TO_IMAGE_FIELD_NUMBER: _ClassVar[int]
    UNDERSTAND_FIELD_NUMBER: _ClassVar[int]
    EDIT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    priority: int
    webhook: Webhook
    text_to_image: TextToImageParams
    understand: UnderstandParams
    edit: EditParams
    def __init__(self, request_id: _Optional[str] = ..., priority: _Optional[int] = ..., webhook: _Optional[_Union[Webhook, _Mapping]] = ..., text_to_image: _Optional[_Union[TextToImageParams, _Mapping]] = ..., understand: _Optional[_Union[UnderstandParams, _Mapping]] = ..., edit: _Optional[_Union[EditParams, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    step: int
    total: int
    def __init__(self, step: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class OutputObject(_message.Message):
    __slots__ = ("name", "object_key", "url", "url_expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    URL_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    object_key: str
    url: str
    url_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., object_key: _Optional[str] = ..., url: _Optional[str] = ..., url_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobOutputs(_message.Message):
    __slots__ = ("objects", "text", "thinking_text", "seed")
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    THINKING_TEXT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[OutputObject]
    text: str
    thinking_text: str
    seed: int
    def __init__(self, objects: _Optional[_Iterable[_Union[OutputObject, _Mapping]]] = ..., text: _Optional[str] = ..., thinking_text: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "request_id", "kind", "priority", "state", "stage", "progress", "queue_position", "attempts", "stage_seconds", "error", "outputs", "params", "cancel_requested", "created_at", "started_at", "finished_at", "webhook", "webhook_deliveries", "trace_id")
    class StageSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    STAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    request_id: str
    kind: JobKind
    priority: int
    state: JobState
    stage: Stage
    progress: Progress
    queue_position: int
    attempts: int
    stage_seconds: _containers.ScalarMap[str, float]
    error: JobError
    outputs: JobOutputs
    params: _struct_pb2.Struct
    cancel_requested: bool
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    webhook: Webhook
    webhook_deliveries: _containers.RepeatedCompositeFieldContainer[WebhookDelivery]
    trace_id: str
    def __init__(self, id: _Optional[str] = ..., request_id: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., priority: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., stage: _Optional[_Union[Stage, str]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., queue_position: _Optional[int] = ..., attempts: _Optional[int] = ..., stage_seconds: _Optional[_Mapping[str, float]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., outputs: _Optional[_Union[JobOutputs, _Mapping]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., cancel_requested: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., webhook: _Optional[_Union[Webhook, _Mapping]] = ..., webhook_deliveries: _Optional[_Iterable[_Union[WebhookDelivery, _Mapping]]] = ..., trace_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "kind", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    kind: JobKind
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., kind: _Optional[_Union[JobKind, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...
