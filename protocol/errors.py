"""Typed errors raised by the decoder. Decoding never raises anything else."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: the peer sent bytes that are not a valid message."""


class TruncatedMessage(ProtocolError):
    """The frame is shorter than its header, or than the length its header declares."""


class OversizedMessage(ProtocolError):
    """The frame declares (or has) more bytes than MAX_MESSAGE_SIZE."""


class MalformedMessage(ProtocolError):
    """The bytes are framed correctly but do not decode to a well-formed message."""


class UnknownMessage(ProtocolError):
    """The message names a type this side does not know."""


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version."""
