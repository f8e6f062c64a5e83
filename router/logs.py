"""Structured logging: JSON lines in production, readable lines on a terminal.

Every log line is one line, written whole, whoever writes it: the libraries' own loggers
(aiohttp, asyncio) go through the same renderer, a traceback becomes a field of its JSON line,
and a malformed HTTP request is one warning without a traceback. Strings from outside
(topics, payload excerpts) cannot drive the operator's terminal: control characters are shown
escaped.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from router import redaction

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with control characters (escape sequences above all) written as `\\xNN`."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Set up structlog once for the process; `auto` means pretty on a terminal, JSON otherwise."""
    pretty = sys.stderr.isatty() if log_format == "auto" else log_format == "pretty"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=True)
        if pretty
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finish: list[structlog.typing.Processor] = [
        _escape_controls if pretty else structlog.processors.format_exc_info,
        redaction.scrub_event,  # no password or token in any line, tracebacks included
        renderer,
    ]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.dev.set_exc_info if pretty else structlog.processors.format_exc_info,
            *finish,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # One write per line (print() makes two, which interleave with a lane worker's lines
        # on the shared stderr when Python runs unbuffered).
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.contextvars.merge_contextvars, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    handler.addFilter(_quiet_bad_requests)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric_level)


def _escape_controls(
    logger: Any, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Terminal output only (JSON escapes them itself): escape control characters."""
    return {k: printable(v) if isinstance(v, str) else v for k, v in event.items()}


def _quiet_bad_requests(record: logging.LogRecord) -> bool:
    """aiohttp logs a malformed request with its parser's traceback: one line is enough."""
    if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
        reason = str(record.exc_info[1].message).strip().splitlines() or ["malformed"]
        record.msg = f"{record.getMessage()}: {reason[0]}"
        record.args = ()
        record.exc_info = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True
