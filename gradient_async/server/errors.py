"""Error answers in the contract's shape: `{"message", "type"?, "payload"?}`, never a bare 500.

Example::

    raise ApiError(404, "no model adapter 'x' in this workspace", type="unknownModelAdapter")
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gradient_async.engine.base import EngineError
from gradient_async.server.limits import LimitError
from gradient_async.server.metrics import record_rejection

__all__ = ["ApiError", "disk_full", "error_response", "install_error_handlers"]

logger = logging.getLogger("gradient_async.server")


class ApiError(Exception):
    """An error answer: HTTP status, a message saying what to fix, the contract's `type`, a payload."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str | None = None,
        payload: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.payload = payload
        self.headers = headers


def error_response(
    status_code: int,
    message: str,
    *,
    type: str | None = None,
    payload: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"message": message}
    if type is not None:
        body["type"] = type
    if payload is not None:
        body["payload"] = payload
    return JSONResponse(body, status_code=status_code, headers=headers)


def disk_full(exc: BaseException) -> bool:
    """True when `exc` (or an exception it was raised from) says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.OperationalError) and "full" in str(current):
            return True  # "database or disk is full"
        current = current.__cause__ or current.__context__
    return False


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    in_body = any(err.get("loc", ("body",))[0] == "body" for err in errors)
    problems = [f"{_location(tuple(err.get('loc', ())))}: {err.get('msg', 'invalid value')}" for err in errors]
    message = "; ".join(problems) or "invalid request"
    clean = [{"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")} for err in errors]
    return error_response(
        400,
        message,
        type="bodyParsingError" if in_body else "queryOrPathParsingError",
        payload={"validationError": clean, "formattedValidationError": message},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map ApiError, EngineError, request validation, unknown routes and crashes to contract bodies."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        limit = (exc.payload or {}).get("limit")
        if isinstance(limit, str):  # admission's 429s name the limit they hit
            record_rejection(request, status=exc.status_code, reason=limit)
        return error_response(exc.status_code, exc.message, type=exc.type, payload=exc.payload, headers=exc.headers)

    async def limit_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, LimitError)
        record_rejection(request, status=exc.status_code, reason=exc.limit)
        return error_response(exc.status_code, exc.message, type=exc.type, payload=exc.payload())

    async def engine_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EngineError)
        return error_response(exc.status_code, exc.message, type=exc.type, payload=exc.payload)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; the API lives under /api (see /openapi.json)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message, headers=dict(exc.headers or {}))

    async def crash(request: Request, exc: Exception) -> JSONResponse:
        if disk_full(exc):
            logger.error("no space left in --data-dir: %s %s refused (%s)", request.method, request.url.path, exc)
            return error_response(
                507,
                "no space left in --data-dir: the request changed nothing; retry once the server has disk space",
                type="failed",
            )
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal server error: {type(exc).__name__}", type="failed")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(LimitError, limit_error)
    app.add_exception_handler(EngineError, engine_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crash)
