"""Logging for the server and the mount daemon: one line per event, text or JSON lines,
and never a token (anything shaped like one is redacted before it is written)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

#: metafs tokens (``mfs_<kind>_<secret>``) and bearer credentials, wherever they appear
_SECRET = re.compile(r"(mfs_(?:operator|host|unit|reader)_)[A-Za-z0-9_\-]+|((?i:bearer)\s+)\S+")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(text: str) -> str:
    """``text`` with every token replaced by ``<kind prefix>***``."""
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message[, error]."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            line["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def formatter(fmt: str = "text", text_format: str = TEXT_FORMAT) -> logging.Formatter:
    """A formatter of ``text`` (``text_format``) or ``json`` lines; both redact tokens."""
    return _JsonLines() if fmt == "json" else _Redacting(text_format)


def setup(
    level: str, fmt: str = "text", handler: logging.Handler | None = None, text_format: str = TEXT_FORMAT
) -> None:
    """Configure the root logger (``fmt``: ``text`` or ``json``) for a long-running process."""
    handler = handler or logging.StreamHandler()
    handler.setFormatter(formatter(fmt, text_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):  # one line per request is noise, and URLs may carry ids
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # through our handler
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
