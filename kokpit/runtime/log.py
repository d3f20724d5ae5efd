"""Structured logs: one JSON object per line when not on a terminal, readable text when on one.

Loggers carry fields (``controller``, ``key``, ``reconcile_id``, ...) through
:class:`logging.LoggerAdapter`, so every line of a reconcile names its object.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import orjson

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED)
        line = f"{record.levelname[0]} {record.name}: {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class Logger(logging.LoggerAdapter[logging.Logger]):
    """A logger with bound fields; ``with_fields`` adds more."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs

    def with_fields(self, **fields: Any) -> Logger:
        return Logger(self.logger, {**(self.extra or {}), **fields})


def get_logger(name: str, **fields: Any) -> Logger:
    return Logger(logging.getLogger(name), fields)


def configure(level: int = logging.INFO, *, json: bool | None = None, stream: Any = None) -> None:
    """Set up the root logger once for a process (JSON unless writing to a terminal)."""
    stream = stream or sys.stderr
    use_json = not stream.isatty() if json is None else json
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
