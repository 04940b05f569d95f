"""The protocol: every message round-trips, and decoding arbitrary bytes raises only the
protocol's own errors. Pure; needs no root."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyctr.protocol import (
    MAX_MESSAGE_SIZE,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Config,
    Created,
    Hello,
    Log,
    MalformedMessage,
    OversizedMessage,
    ProtocolError,
    Ready,
    SetupFailed,
    Terminal,
    TruncatedMessage,
    UnknownMessage,
    VersionMismatch,
    WorkloadExited,
    WorkloadStarted,
    check_hello,
    decode,
    encode,
)
from pyctr.protocol.codec import encode_value, frame
from pyctr.supervisor import ContainerConfig

texts = st.text(max_size=40)
ints = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
# The codec also carries unsigned 64-bit values (RLIM_INFINITY, seccomp arguments).
wide_ints = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
scalars = st.none() | st.booleans() | wide_ints | texts
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
messages = st.one_of(
    st.builds(Hello, ints),
    st.builds(Config, texts, texts, texts,
              chroot=st.booleans(), signal_group=st.booleans(), log_level=texts,
              start_fifo=texts, detached=st.booleans(), overlay_upper=texts,
              overlay_work=texts),
    st.just(Terminal()),
    st.just(Created()),
    st.builds(Log, texts, texts, texts, st.dictionaries(texts, values, max_size=4)),
    st.builds(Ready, st.lists(texts), st.lists(texts)),
    st.builds(WorkloadStarted, ints),
    st.builds(WorkloadExited, st.none() | ints, st.none() | ints),
    st.builds(SetupFailed, ints, texts, texts),
)


@given(messages)
def test_every_message_round_trips(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


@given(st.binary(max_size=300))
@settings(max_examples=2000)
def test_decoding_random_bytes_raises_only_protocol_errors(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass


@given(messages, st.data())
@settings(max_examples=1000)
def test_decoding_corrupted_messages_raises_only_protocol_errors(
    message: object, data: st.DataObject
) -> None:
    raw = bytearray(encode(message))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            decode(candidate)
        except ProtocolError:
            pass


@given(values)
def test_well_framed_payloads_of_any_shape_decode_or_raise_protocol_errors(value: object) -> None:
    try:
        decode(frame(encode_value(value)))  # type: ignore[arg-type]
    except ProtocolError:
        pass


def test_non_utf8_command_lines_survive_the_trip() -> None:
    # Linux argv is bytes; Python hands undecodable bytes over as lone surrogates.
    argv = ["/bin/echo", b"caf\xe9".decode("utf-8", "surrogateescape")]
    spec = ContainerConfig("/r", argv, env={"K": "\udcff"}).build_spec().to_value()
    message = Config("c", "/r", json.dumps(spec))
    decoded = decode(encode(message))
    assert isinstance(decoded, Config)
    process = json.loads(decoded.spec)["process"]
    assert isinstance(process, dict) and isinstance(process["args"], list)
    assert str(process["args"][1]).encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_unsigned_64_bit_values_round_trip_and_no_wider() -> None:
    infinity = (1 << 64) - 1
    message = Log("t", "info", "e", {"limit": infinity, "low": -(1 << 63)})
    assert decode(encode(message)) == message
    with pytest.raises(ValueError, match="64 bits"):
        encode(Log("t", "info", "e", {"limit": 1 << 64}))
    # An unsigned tag carrying a value that fits the signed one is not canonical: refused.
    with pytest.raises(MalformedMessage, match="signed"):
        decode(frame(b"u" + (5).to_bytes(8, "big")))


def test_truncated_header() -> None:
    with pytest.raises(TruncatedMessage):
        decode(b"\x00\x00")


def test_truncated_body() -> None:
    with pytest.raises(TruncatedMessage):
        decode(encode(Hello())[:-1])


def test_oversized_declared_length() -> None:
    with pytest.raises(OversizedMessage):
        decode(struct.pack("!I", MAX_MESSAGE_SIZE + 1) + b"x")


def test_oversized_message_cannot_be_encoded() -> None:
    with pytest.raises(OversizedMessage):
        encode(Log("t", "info", "e", {"blob": "x" * MAX_MESSAGE_SIZE}))


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode(encode(Hello()) + b"\x00")


def test_unknown_message_type() -> None:
    with pytest.raises(UnknownMessage):
        decode(frame(encode_value(["launch_missiles", {}])))


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (["hello", {}], "missing field"),
        (["hello", {"version": 1, "extra": 2}], "unexpected field"),
        (["hello", {"version": "1"}], "wrong kind"),
        (["hello", {"version": True}], "bool is not an int"),
        (["workload_exited", {"code": "0", "signal": None}], "wrong optional kind"),
        (["config", {"container": "c", "rootfs": "/", "argv": [1], "env": {}, "cwd": "/",
                     "hostname": "h", "chroot": False, "signal_group": True, "tty": False,
                     "rows": 0, "columns": 0, "log_level": "info"}], "argv must be text"),
        ({"type": "hello"}, "not a pair"),
        ([1, {}], "type is not text"),
    ],
)
def test_malformed_fields(payload: object, why: str) -> None:
    with pytest.raises(MalformedMessage):
        decode(frame(encode_value(payload)))  # type: ignore[arg-type]


def test_nesting_is_bounded() -> None:
    deep: object = "leaf"
    for _ in range(100):
        deep = [deep]
    data = frame(b"l\x00\x00\x00\x01" * 100 + b"N")
    with pytest.raises(MalformedMessage):
        decode(data)
    with pytest.raises(ValueError, match="deeply"):
        encode_value(deep)  # type: ignore[arg-type]


def test_container_counts_cannot_exceed_the_payload() -> None:
    with pytest.raises(MalformedMessage):
        decode(frame(b"l\xff\xff\xff\xff"))


def test_registry_names_every_message() -> None:
    assert set(MESSAGE_TYPES) == {"hello", "config", "cgroup_joined", "log", "ready", "created",
                                  "terminal", "workload_started", "workload_exited",
                                  "setup_failed"}
    assert Hello().version == PROTOCOL_VERSION


def test_the_handshake_refuses_another_version_for_either_side() -> None:
    check_hello(Hello(), "init")
    with pytest.raises(VersionMismatch, match=f"init speaks protocol 2, this side "
                                              f"{PROTOCOL_VERSION}; install matching"):
        check_hello(Hello(2), "init")
    assert issubclass(VersionMismatch, ProtocolError)  # the supervisor ends the container
