"""Logging of ``kvconf serve``: text or JSON lines, each tagged with its request id.

The API sets :data:`request_id` for the length of each request (see
``api/requestid.py``); :class:`RequestIdFilter`, installed on the server's one
handler, copies it onto every record, so every line a request causes (the
API's, the library's, uvicorn's access line) carries it. Lines logged outside
a request (scheduled snapshots and exports) carry ``-``.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any, Literal

import msgspec

__all__ = [
    "JsonFormatter",
    "RequestIdFilter",
    "TextFormatter",
    "configure_logging",
    "logging_config",
    "request_id",
]

#: The id of the request being served in this context (None outside requests).
request_id: ContextVar[str | None] = ContextVar("kvconf_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a request); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get() or "-"
        return True


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05Z INFO kvconf.export [rid] message``."""

    converter = time.gmtime  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%SZ",
        )

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get() or "-"
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id (and exc)."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return self._encoder.encode(doc).decode()


def logging_config(fmt: Literal["text", "json"], level: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for the server (also uvicorn's ``log_config``).

    One stderr handler on the root logger; kvconf's and uvicorn's loggers at
    ``level``, everyone else's at WARNING.
    """
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "text": {"()": TextFormatter},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": fmt,
                "filters": ["request_id"],
            }
        },
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("kvconf", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def configure_logging(fmt: Literal["text", "json"] = "text", level: str = "INFO") -> None:
    """Apply :func:`logging_config` to this process."""
    import logging.config

    logging.config.dictConfig(logging_config(fmt, level))
    logging.captureWarnings(True)
