"""The messages between the pyctr supervisor and the container's init: pure encode/decode,
no I/O. Both the trio supervisor and the synchronous init speak it."""

from .codec import MAX_MESSAGE_SIZE
from .errors import (
    MalformedMessage,
    OversizedMessage,
    ProtocolError,
    TruncatedMessage,
    UnknownMessage,
    VersionMismatch,
)
from .messages import (
    LOG_LEVELS,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Config,
    Hello,
    Log,
    Message,
    Ready,
    SetupFailed,
    Terminal,
    WorkloadExited,
    WorkloadStarted,
    decode,
    encode,
    utc_timestamp,
)

__all__ = [
    "LOG_LEVELS",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Config",
    "Hello",
    "Log",
    "MalformedMessage",
    "Message",
    "OversizedMessage",
    "ProtocolError",
    "Ready",
    "SetupFailed",
    "Terminal",
    "TruncatedMessage",
    "UnknownMessage",
    "VersionMismatch",
    "WorkloadExited",
    "WorkloadStarted",
    "decode",
    "encode",
    "utc_timestamp",
]
