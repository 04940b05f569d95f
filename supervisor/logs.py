"""structlog configuration for the CLI, and where its records go.

The library never configures structlog: a program that runs containers keeps its own
configuration and receives pyctr's events through it. The CLI calls ``configure`` once, in
``main()``, with a ``LogSink`` (stderr or a ``LogFile``) as the destination. Records are JSON
objects, one per line, with ``timestamp`` (RFC 3339, UTC), ``level``, ``event`` (a stable
dotted name), ``container`` and ``source`` first, or the same rendered for a human.

Much of what is logged comes from inside the container (init's events, the workload's
output, paths and messages), so neither format lets a control character through raw: JSON
escapes C0 controls itself and ``_dumps`` escapes DEL and the C1 controls (``\u009b`` is a
terminal's CSI as surely as ESC ``[``); the text format shows every character
``str.isprintable`` refuses as its escape (``\x1b``, ``\n``), keys included.
"""

from __future__ import annotations

import json
import re

import orjson
import structlog
import trio

from pyctr.protocol import utc_timestamp
from pyctr.protocol.messages import printable

from .logfile import LogSink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from structlog.typing import EventDict, WrappedLogger

_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_FIRST_KEYS = ("timestamp", "level", "event", "container", "source")


def _timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Keep a timestamp that is already there: init's events carry the moment init logged them.
    if "timestamp" not in event_dict:
        event_dict["timestamp"] = utc_timestamp()
    return event_dict


def _dumps(event_dict: EventDict, **options: Any) -> bytes:
    """orjson is ~40x faster than json for a 16 KiB output line; it refuses lone surrogates
    (from a command line that was not UTF-8), which json writes as escapes."""
    try:
        data = orjson.dumps(event_dict, **options)
    except orjson.JSONEncodeError:
        return json.dumps(event_dict, **options).encode()  # ASCII only: nothing to escape
    if b"\x7f" in data or b"\xc2" in data:  # two quick scans of a line that is all text
        data = _RAW_CONTROLS.sub(_json_escape, data)
    return data


def json_text(text: str) -> bytes:
    """``text`` as a JSON string, escaped as every record's text is (see ``_dumps``)."""
    try:
        data = orjson.dumps(text)
    except orjson.JSONEncodeError:
        return json.dumps(text).encode()  # a lone surrogate: ASCII escapes only
    if b"\x7f" in data or b"\xc2" in data:
        data = _RAW_CONTROLS.sub(_json_escape, data)
    return data


# DEL and U+0080-U+009F as orjson writes them (UTF-8): JSON allows them raw in strings, a
# terminal that shows the line acts on them. In JSON output, 0xC2 is only ever the first
# byte of a character, and these bytes appear only inside strings.
_RAW_CONTROLS = re.compile(b"\x7f|\xc2[\x80-\x9f]")


def _json_escape(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode())


_RENDERED_RAW = frozenset(("exception", "stack", "exc_info"))
"""Keys the console renderer writes out itself (tracebacks, several lines by design): only
the supervisor's own, since init's fields never take these names (``relay_init_log``)."""


class _Escaped:
    """Text with a control character in it, as the text format shows it: escaped. The
    console renderer shows text as it is unless it needs quotes; anything else with its
    ``repr`` (or ``str``), which this is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text) if _QUOTED & set(self.text) else printable(self.text)

    def __str__(self) -> str:
        return printable(self.text)


_QUOTED = frozenset(" \t=\r\n\"'")
"""What makes the console renderer quote a text value (which escapes it too)."""


def _escape_controls(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """For the text format: no control character reaches the terminal, in a key or a value
    (values inside lists and dictionaries are shown with their repr, which escapes them)."""
    if not all(key.isprintable() for key in event_dict):
        event_dict = {printable(key): value for key, value in event_dict.items()}
    for key, value in event_dict.items():
        if isinstance(value, str) and not value.isprintable() and key not in _RENDERED_RAW:
            event_dict[key] = _Escaped(value)
    return event_dict


def _first_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def configure(*, log_format: str, level: str, sink: LogSink) -> None:
    renderer: Any
    factory: Any
    escape: list[Any] = []
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        factory = structlog.BytesLoggerFactory(file=sink)  # type: ignore[arg-type] # duck-typed
    else:
        escape = [_escape_controls]
        renderer = structlog.dev.ConsoleRenderer(colors=sink.isatty())
        factory = structlog.WriteLoggerFactory(file=sink)  # type: ignore[arg-type] # duck-typed
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            _first_keys,
            *escape,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVEL_NUMBERS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def default_format(sink: LogSink) -> str:
    return "text" if sink.isatty() else "json"


class CommitBeforeWait(trio.abc.Instrument):
    """Writes the sink's waiting records whenever trio is about to wait for I/O: after each
    batch of work, so records go out in few system calls yet never wait for long."""

    def __init__(self, sink: LogSink) -> None:
        self.sink = sink

    def before_io_wait(self, timeout: float) -> None:
        self.sink.commit()
