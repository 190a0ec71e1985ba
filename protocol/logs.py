"""Logging for both sides, hub and runner: one chain of processors, one renderer, stderr.

structlog events (the project's own, `noun.verb`) and the standard library's records
(aiohttp, asyncio, websockets, Python warnings) come out the same way: JSON lines for
machines, or coloured text for people. Every line names the side that wrote it (`component`:
hub or runner) and the module (`logger`: the name given to `structlog.get_logger`, or the
standard library logger's), so the hub's `task.finished` and the runner's tell apart even
in one stream (a hub with its embedded runner).

It lives in protocol/, the ground floor both sides stand on, and is the one module there
that needs more than msgspec: structlog, a dependency of hub and runner alike.
"""

import logging
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]
Component = Literal["hub", "runner"]

# The standard library's records below this level are dropped: libraries' info lines (a
# websocket connected, a server listening) say nothing the project's own events do not.
LIBRARY_LEVEL = logging.WARNING


class _NamedPrintLogger(structlog.PrintLogger):
    """structlog's PrintLogger, keeping the name it was made for (PrintLoggerFactory drops
    it) so that `add_logger_name` can put it in the event, as it does for stdlib loggers."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _AddComponent:
    """Adds `component` to every event: bound once, when logging is set up."""

    def __init__(self, component: Component) -> None:
        self.component = component

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        event.setdefault("component", self.component)
        return event


class _StructlogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging puts on the root logger (a second call replaces it)."""


def configure_logging(component: Component, fmt: LogFormat = "json",
                      level: str = "info") -> None:
    """Route every log line of this process to stderr through one structlog chain."""
    stream = sys.stderr
    renderer: Processor = (structlog.processors.JSONRenderer() if fmt == "json"
                           else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    # What every event gets, the project's own and the standard library's alike.
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _AddComponent(component),
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]

    def named_logger(*args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(stream, args[0] if args else "")

    # The project's events go straight to the stream (no LogRecord per event: the hub logs
    # on its hot paths), filtered by level before any processor runs.
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=named_logger,
        cache_logger_on_first_use=False,
    )
    # The libraries' records go through the same processors and renderer: the stream stays
    # JSON lines (tracebacks included, as an `exception` field) when fmt is json.
    handler = _StructlogHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StructlogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LIBRARY_LEVEL)
    # Python's warnings (deprecations, unclosed resources) are records too, not bare text.
    logging.captureWarnings(True)
