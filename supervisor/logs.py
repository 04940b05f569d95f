"""structlog configuration for the CLI, and where its records go.

The library never configures structlog: a program that runs containers keeps its own
configuration and receives pyctr's events through it. The CLI calls ``configure`` once, in
``main()``, with stderr or a ``LogFile`` as the destination. Records are JSON objects, one
per line, with ``timestamp`` (RFC 3339, UTC), ``level``, ``event`` (a stable dotted name),
``container`` and ``source`` first, or the same rendered for a human.
"""

from __future__ import annotations

import time

import structlog

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

    from structlog.typing import EventDict, WrappedLogger

    from .logfile import LogFile

_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_FIRST_KEYS = ("timestamp", "level", "event", "container", "source")


def _timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Keep a timestamp that is already there: init's events carry the moment init logged them.
    if "timestamp" not in event_dict:
        now = time.time()
        seconds = int(now)
        event_dict["timestamp"] = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
                                   + f".{int((now - seconds) * 1e6):06d}Z")
    return event_dict


def _first_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def configure(*, log_format: str, level: str, stream: TextIO | LogFile) -> None:
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            _first_keys,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVEL_NUMBERS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def default_format(stream: TextIO | LogFile) -> str:
    return "text" if stream.isatty() else "json"
