"""The job a log line is about, and the two log formats (``LOG_FORMAT``: ``text`` or
``json``). Both formatters pass each finished line through ``bot.redaction.redact``.

The service binds the job id once the job is held (``bind_job``); it lasts for the rest of
the calling task, and each platform event runs in a task of its own, so every line logged
while handling that job, by the core or an adapter, carries it. ``JobFilter`` copies it onto
each record as ``job_id``; the formatters render it as ``job=<id>`` or a ``"job"`` field.
Handlers are installed only by the entry point (``adapters.cli.main``).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

from bot.redaction import redact

__all__ = [
    "JobFilter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "bind_job",
    "current_job",
    "log_handler",
]

log = logging.getLogger(__name__)

LogFormat = Literal["text", "json"]

_job_id: ContextVar[str | None] = ContextVar("imagine_bot_job_id", default=None)


def bind_job(job_id: str | None) -> None:
    """Lines logged from now on in this task (and tasks it starts) are about ``job_id``."""
    _job_id.set(job_id)


def current_job() -> str | None:
    return _job_id.get()


class JobFilter(logging.Filter):
    """Sets ``record.job_id`` (``None`` outside a job) on every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job()
        return True


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05,678 INFO bot.service job=ab12cd: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.job = f" job={job_id}" if job_id else ""  # read by the format string
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))  # tracebacks included


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``job`` when the line is about a job, and ``exc_info`` with the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            entry["job"] = job_id
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


def log_handler(fmt: LogFormat, stream: TextIO) -> logging.Handler:
    """A stream handler writing ``fmt`` lines, with the job id on each."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobFilter())
    return handler
