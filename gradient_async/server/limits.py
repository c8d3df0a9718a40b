"""Size and work limits of the server, checked before any work is done.

Every limit has a documented default and a `gradient-async serve` flag (see the README table).
Request bytes and header bytes are enforced at the edge (`server/edge.py`); tokens, samples and
names are checked by the routes with `LimitError` answers that name the limit.

Engines may tell the server how they count tokens: an engine that defines
``count_tokens(model_slug, text) -> int`` (thread-safe; called in a worker thread) and
``context_tokens(model_slug) -> int | None`` is used as is; for any other engine the server counts
one token per 3 UTF-8 bytes (rounded up), which over-counts real tokenizers.

Example::

    limits = ServerLimits(max_body_bytes=1 << 20, max_fine_tune_samples=100)
    ServerSettings(data_dir=tmp, credentials={"t": {"w"}}, limits=limits)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_LIMITS",
    "LimitError",
    "ServerLimits",
    "TokenCounting",
    "count_tokens",
    "context_tokens",
]


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server. Every field is an integer > 0 (rates: None = off).

    Args:
        max_body_bytes: request body (413, on Content-Length or while reading a chunked body).
        max_header_bytes: all request headers together (431).
        max_workspace_chars: the `x-gradient-workspace-id` header (400).
        max_adapter_name_chars: an adapter name; control characters are always refused (400).
        max_query_tokens: the prompt of one completion (422).
        context_tokens: prompt + generated tokens, for engines that declare no context window (422).
        max_fine_tune_samples: samples in one fine-tune request (413).
        max_fine_tune_tokens: tokens in one fine-tune request, all samples together (422).
        max_queue: engine calls admitted at once (running or waiting); past it 429 + Retry-After.
        body_timeout_s: seconds a client may take to send its body (408 after that; slow-body attacks).
        requests_per_minute: per access token; past it 429 + Retry-After. None: no limit.
        tokens_per_minute: prompt + generation + training tokens per access token. None: no limit.

    Example::

        ServerLimits(max_queue=16, requests_per_minute=600)
    """

    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_workspace_chars: int = 128
    max_adapter_name_chars: int = 256
    max_query_tokens: int = 4096
    context_tokens: int = 8192
    max_fine_tune_samples: int = 1000
    max_fine_tune_tokens: int = 100_000
    max_queue: int = 64
    body_timeout_s: float = 60.0
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "body_timeout_s":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                    raise ValueError(f"body_timeout_s must be a number > 0, got {value!r}")
            elif f.name in ("requests_per_minute", "tokens_per_minute"):
                ok = value is None or (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                    and value > 0
                )
                if not ok:
                    raise ValueError(f"{f.name} must be a number > 0 or None, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name} must be an integer >= 1, got {value!r}")


DEFAULT_LIMITS = ServerLimits()


class LimitError(Exception):
    """A request over a limit: the status (400/413/422/431), a message naming the limit, its name,
    and the contract's error `type` where one fits (`bodyParsingError`, `unprocessableContent`)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        limit: str,
        maximum: int | float,
        actual: int | float | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type
        self.message = message
        self.limit = limit
        self.maximum = maximum
        self.actual = actual

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"limit": self.limit, "maximum": self.maximum}
        if self.actual is not None:
            body["actual"] = self.actual
        return body


@runtime_checkable
class TokenCounting(Protocol):
    """The optional engine hook: exact token counts and the context window per base model."""

    def count_tokens(self, model_slug: str, text: str) -> int: ...

    def context_tokens(self, model_slug: str) -> int | None: ...


def count_tokens(engine: object, model_slug: str, texts: Sequence[str]) -> list[int]:
    """Tokens of each text as `engine` counts them (or the byte rule). Call it in a worker thread.

    Example::

        await anyio.to_thread.run_sync(count_tokens, engine, "gradient-test-model", ["Hi"])
    """
    if isinstance(engine, TokenCounting):
        return [engine.count_tokens(model_slug, text) for text in texts]
    return [math.ceil(len(text.encode("utf-8")) / 3) for text in texts]


def context_tokens(engine: object, model_slug: str, limits: ServerLimits) -> int:
    """The prompt + generation window of `model_slug`: the engine's, else `limits.context_tokens`."""
    if isinstance(engine, TokenCounting):
        declared = engine.context_tokens(model_slug)
        if declared is not None:
            return declared
    return limits.context_tokens
