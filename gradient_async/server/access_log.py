"""Access log lines: one per request, as JSON or as `key=value` text.

`ObservabilityMiddleware` logs each request on the `gradient_async.server.access` logger with its fields in
`record.access` (route, status, duration_ms, workspace, model_id, request_id; never the token, a query
string or a body). `gradient-async serve --log-format json|text` installs this formatter.

Example::

    configure_access_log("json")   # {"ts": "...", "method": "POST", "route": "/api/models/{model_id}/complete", ...}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any, Literal

__all__ = ["AccessLogFormatter", "LogFormat", "configure_access_log"]

LogFormat = Literal["json", "text"]

_ACCESS_LOGGER = "gradient_async.server.access"


class AccessLogFormatter(logging.Formatter):
    """Formats access records (`record.access`) as one JSON object or one `key=value` line.

    Example::

        handler.setFormatter(AccessLogFormatter("text"))
        # 2026-11-28T10:00:00.123Z method=POST route=/api/models/{model_id}/complete status=200 ...
    """

    def __init__(self, fmt: LogFormat = "json") -> None:
        if fmt not in ("json", "text"):
            raise ValueError(f"log format must be 'json' or 'text', got {fmt!r}")
        super().__init__()
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "access", None) or {"message": record.getMessage()}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        if self.fmt == "json":
            return json.dumps({"ts": stamp, **fields}, separators=(",", ":"), ensure_ascii=True)
        parts = [stamp]
        for key, value in fields.items():
            if value is None:
                continue
            text = str(value)
            if not text or any(c.isspace() or c in '"=\\' or not c.isprintable() for c in text):
                text = json.dumps(text, ensure_ascii=True)  # quoted: a value can never forge a field or a line
            parts.append(f"{key}={text}")
        return " ".join(parts)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of each line (not the one at start-up)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_access_log(fmt: LogFormat, stream: IO[str] | None = None, *, level: str = "info") -> logging.Handler:
    """Send access lines to `stream` (default stderr) in `fmt`; replaces a handler installed before.
    Lines are INFO records: a `level` of warning or above silences them (as uvicorn's own access log).

    Example::

        configure_access_log("text")
    """
    logger = logging.getLogger(_ACCESS_LOGGER)
    for old in [h for h in logger.handlers if getattr(h, "_gradient_access", False)]:
        logger.removeHandler(old)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(AccessLogFormatter(fmt))
    handler._gradient_access = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(max(logging.INFO, logging.getLevelNamesMapping().get(level.upper(), logging.INFO)))
    logger.propagate = False
    return handler
