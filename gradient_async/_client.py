"""`AsyncGradient`: the client. It owns the connection pool, the concurrency limiter and the
one retry loop; resources only describe requests.

One call = deadline scope (`RetryPolicy.deadline`, a wall clock over everything) → per attempt:
concurrency slot (pool timeout) → send (bounded as a whole by the timeout) → status mapping; between
attempts `RetryPolicy.next_wait` decides. After `aclose()` no attempt starts; a client belongs to the
event loop it was first used on.

Example::

    async with AsyncGradient() as client:          # GRADIENT_ACCESS_TOKEN / GRADIENT_WORKSPACE_ID
        bases = await client.models.list(only_base=True)
        adapter = await bases[-1].create_adapter(name="my_model_adapter")
        print((await adapter.complete(query="Hello")).generated_output)
        await adapter.delete()
"""

from __future__ import annotations

import dataclasses
import enum
import json
import random
import re
import sys
from asyncio import _get_running_loop
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, ParamSpec, TypeVar, overload

import anyio
import httpx
import pydantic

from gradient_async._config import (
    NOT_GIVEN,
    ClientConfig,
    NotGiven,
    RateControl,
    TimeoutTypes,
    given,
    to_httpx_timeout,
)
from gradient_async._errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    ClientClosedError,
    GradientError,
    PoolTimeoutError,
    RateLimitError,
    ValidationError,
    make_status_error,
)
from gradient_async._hooks import CallScope, Hooks, Instrumentation
from gradient_async._limiter import PATIENT, Limiter, estimate_cost
from gradient_async._logs import setup_logging
from gradient_async._otel import record_limiter_pause, record_limiter_window
from gradient_async._retry import RetryHook, RetryPolicy, logger
from gradient_async._transport import (
    AiohttpTransport,
    AutoTransport,
    Exchange,
    ResponseTooLarge,
    UnusableBody,
    decoded_response,
    str_pairs,
)
from gradient_async._version import __version__

if TYPE_CHECKING:
    from gradient_async.resources.adapters import AsyncAdapters
    from gradient_async.resources.completions import AsyncCompletions
    from gradient_async.resources.embeddings import AsyncEmbeddings
    from gradient_async.resources.fine_tunes import AsyncFineTunes
    from gradient_async.resources.models import AsyncModels

__all__ = ["AsyncGradient", "RawResponse", "RequestOptions", "USER_AGENT", "request_id_of"]

T = TypeVar("T")
_RNG: Final = random.Random()
P = ParamSpec("P")

USER_AGENT: Final = f"gradient-async/{__version__} ({sys.platform}; python {sys.version_info[0]}.{sys.version_info[1]})"


_IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """One API call, as a resource describes it. The client turns it into HTTP attempts.

    `idempotent` None (the default) derives it from the method: GET/DELETE may be repeated, POST
    may not (unless the resource says so, as completions and embeddings do). `timeout`,
    `max_retries` and the `extra_*` fields are the per-call options every resource method takes.

    Example::

        RequestOptions("POST", f"/models/{model_id}/complete", json=body, idempotent=True)
    """

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None
    idempotent: bool | None = None
    timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    max_retries: int | NotGiven = NOT_GIVEN
    on_retry: RetryHook | None = None
    extra_headers: Mapping[str, str] | None = None
    extra_query: Mapping[str, str] | None = None
    extra_body: Mapping[str, Any] | None = None

    @property
    def is_idempotent(self) -> bool:
        """Whether the call may be repeated after it may have reached the server."""
        if self.idempotent is not None:
            return self.idempotent
        return self.method.upper() in _IDEMPOTENT_METHODS


@dataclass(frozen=True, slots=True)
class _Timeouts:
    """A timeout setting resolved once: httpx's per-phase fields, the whole-attempt bound, the slot wait."""

    ext: dict[str, float | None]
    attempt: float | None
    pool: float | None

    @classmethod
    def of(cls, timeout: httpx.Timeout) -> _Timeouts:
        return cls(ext=timeout.as_dict(), attempt=timeout.read, pool=timeout.pool)


@dataclass(frozen=True, slots=True)
class RawResponse(Generic[T]):
    """What `client.with_raw_response(...)` returns: the parsed value and the HTTP response it came from.

    Example::

        raw = await client.with_raw_response(client.completions.create, model_id, query="Hi")
        print(raw.status_code, raw.request_id, raw.headers["content-type"], raw.parsed.generated_output)
    """

    parsed: T
    http_response: httpx.Response
    retries_taken: int = 0

    @property
    def headers(self) -> httpx.Headers:
        return self.http_response.headers

    @property
    def status_code(self) -> int:
        return self.http_response.status_code

    @property
    def request_id(self) -> str | None:
        return request_id_of(self.http_response)

    def parse(self) -> T:
        """The parsed value (as openai-python's `LegacyAPIResponse.parse()`)."""
        return self.parsed


_RAW_SINK: ContextVar[list[tuple[httpx.Response, int]] | None] = ContextVar("gradient_raw_sink", default=None)
_UNBOUND: Final = object()
_STOCK_TRANSPORT_LOOKUP: Final = getattr(httpx.AsyncClient, "_transport_for_url", None)


class _Call:
    """One call's HTTP request, prepared once (every attempt resends it). The `httpx.Request` is
    built only when something needs it: hooks and spans (which may change it; it is then sent as it
    stands), errors, and every transport but our aiohttp one (a user's `http_client=` or `transport=`,
    trio, respx). Unobserved calls on our aiohttp transport send the prepared parts directly."""

    __slots__ = ("_request", "content", "extensions", "headers", "method", "observed", "pairs", "target", "url")

    def __init__(
        self,
        method: str,
        url: httpx.URL,
        target: str,
        headers: httpx.Headers,
        pairs: list[tuple[str, str]],
        content: bytes | None,
        extensions: dict[str, Any],
    ) -> None:
        self.method = method
        self.url = url
        self.target = target  # str(url), cached with it
        self.headers = headers
        self.pairs = pairs  # the headers as str pairs, for aiohttp
        self.content = content
        self.extensions = extensions
        self._request: httpx.Request | None = None
        self.observed = False  # hooks or spans saw the request (and may have changed it): send it as it stands

    @property
    def request(self) -> httpx.Request:
        """The call as an `httpx.Request` (built on first use; hooks may change its headers)."""
        if self._request is None:
            self._request = httpx.Request(
                self.method,
                self.url,
                headers=self.headers,
                content=self.content,
                # its own timeout mapping: a hook changing it must not change the client's default
                extensions={**self.extensions, "timeout": dict(self.extensions["timeout"])},
            )
        return self._request

    def describe(self) -> str:
        return f"{self.method} {self.url}"


class _Answer:
    """One attempt's HTTP answer: status, raw headers and whole (decoded) body; the `httpx.Response`
    is built only when something needs it (errors, hooks, `with_raw_response`)."""

    __slots__ = ("_call", "_response", "content", "raw_headers", "status_code")

    def __init__(self, call: _Call, source: httpx.Response | Exchange) -> None:
        self._call = call
        self._response = source  # an Exchange becomes an httpx.Response when something asks for one
        if isinstance(source, Exchange):
            self.status_code, self.raw_headers, self.content = source.status, source.headers, source.content
        else:
            self.status_code, self.raw_headers, self.content = source.status_code, source.headers.raw, source.content

    @classmethod
    def of_exchange(cls, call: _Call, exchange: Exchange) -> _Answer:
        if exchange.content_encoding:  # httpx decodes gzip, br, ... (within the size limit)
            return cls(call, exchange.response(call.request))
        return cls(call, exchange)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def response(self) -> httpx.Response:
        source = self._response
        if isinstance(source, Exchange):
            source = self._response = source.response(self._call.request)
        return source

    @property
    def request_id(self) -> str | None:
        return _request_id(self.raw_headers)


def _respx_patched() -> bool:
    """Whether respx (`respx.mock(using="httpx")`) has patched httpx's transport lookup: then requests
    go through httpx's public `send`, where respx intercepts them. The private attribute is only
    read here to detect the patch, never called."""
    lookup = getattr(httpx.AsyncClient, "_transport_for_url", None)
    return lookup is not _STOCK_TRANSPORT_LOOKUP and getattr(lookup, "__module__", "").startswith("respx")


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # aclose(timeout=...) drains: no new call starts, calls in flight may finish
    CLOSED = "closed"  # no attempt starts; the transport is closed for good


class _Pool:
    """What `with_options` copies share: the transport, the concurrency slots, the open/closed state,
    and the event loop they belong to."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        transport: httpx.AsyncBaseTransport | None,
        *,
        config: ClientConfig,
        tracing: bool = True,
    ) -> None:
        self.http = http
        self.transport = transport  # the transport we built; None for a user's http_client
        self.max_concurrency = config.max_concurrency
        self.max_queue = config.max_queue
        self.rate_control = config.rate_control
        self.sleep = config.retry.sleep
        self.max_response_bytes = config.max_response_bytes
        self.tracing = tracing  # the limiter's window and pauses go to the OpenTelemetry metrics
        self.state = _State.OPEN
        self.active = 0  # calls in flight (between their start and their result)
        self.drained: anyio.Event | None = None
        self.loop: object = _UNBOUND
        self._limiter: Limiter | None = None

    @property
    def closed(self) -> bool:
        return self.state is not _State.OPEN

    def bind_loop(self) -> None:
        """Tie the pool to the event loop of its first call; a call from another loop is a clear error."""
        loop = _get_running_loop()
        if self.loop is _UNBOUND:
            self.loop = loop  # None under trio, which then skips the per-call check
            return
        raise GradientError(
            "this AsyncGradient is being used on a different event loop than the one it was first used on. "
            "A client (its connection pool, its limits) belongs to one event loop: create the client inside "
            "the coroutine you pass to asyncio.run() (or one client per loop/thread), and close it there."
        )

    # -- the concurrency slot: the one place a call waits for room ------------------------------

    @property
    def limiter(self) -> Limiter:
        """The client's admission control (concurrency, queue bound, pool timeout, rate control),
        shared by every call, batch and `with_options` copy; created on first use, inside the loop."""
        if self._limiter is None:
            self._limiter = Limiter(
                self.max_concurrency,
                max_queue=self.max_queue,
                control=self.rate_control,
                sleep=self.sleep,
                on_window=record_limiter_window if self.tracing else None,
                on_pause=record_limiter_pause if self.tracing else None,
            )
            if self.tracing:
                record_limiter_window(self.max_concurrency, 0)
        return self._limiter

    # -- sending ------------------------------------------------------------------------------

    def fast_transport(self) -> AiohttpTransport | None:
        """Our aiohttp transport, when calls may use it without httpx objects (not under respx)."""
        transport = self.transport
        if type(transport) is not AutoTransport or _respx_patched():
            return None
        return transport.aiohttp_transport()

    async def send(self, call: _Call) -> _Answer:
        """Send through the transport we built (skipping httpx's auth, redirect, cookie and hook
        machinery, which the Gradient API never uses): on our aiohttp transport without building
        httpx objects. A user's client, or httpx's transport lookup patched by respx
        (`respx.mock(using="httpx")`), is used through the public `send`.
        Bodies over `max_response_bytes` raise ResponseTooLarge, without being read whole."""
        fast = self.fast_transport()
        if fast is not None and not call.observed:
            exchange = await fast.exchange(
                call.method,
                call.target,
                call.pairs,
                call.content,
                timeouts=call.extensions["timeout"],
                limit=self.max_response_bytes,
            )
            return _Answer.of_exchange(call, exchange)
        # observed (hooks and spans may have changed the request: it is sent as it stands), or not ours
        return _Answer(call, await self._send_httpx(call.request))

    async def _send_httpx(self, request: httpx.Request) -> httpx.Response:
        transport = self.transport
        if transport is None or _respx_patched():
            response = await self.http.send(request, stream=True)
        else:
            response = await transport.handle_async_request(request)
            response.request = request
        limit = self.max_response_bytes
        try:
            content = response.content  # already whole: our aiohttp transport (capped there), mocks
        except httpx.ResponseNotRead:
            pass
        else:
            if len(content) > limit:
                raise ResponseTooLarge(response, len(content), limit)
            return response
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise ResponseTooLarge(response, int(declared), limit)
            chunks: list[bytes] = []
            size = 0
            raw = response.aiter_raw()
            try:
                async for chunk in raw:
                    size += len(chunk)
                    if size > limit:
                        raise ResponseTooLarge(response, size, limit)
                    chunks.append(chunk)
            finally:
                close = getattr(raw, "aclose", None)  # an async generator: close it here, not in the GC
                if close is not None:
                    await close()
        finally:
            await response.aclose()
        return decoded_response(
            response.status_code,
            response.headers.raw,
            b"".join(chunks),
            request,
            dict(response.extensions),
            limit=limit,
        )

    def bounds_whole_attempt(self) -> bool:
        """Whether our transport bounds each exchange by the read timeout itself (aiohttp's `total`),
        so an attempt needs no cancel scope of its own (one per attempt costs measurable CPU)."""
        transport = self.transport
        return (
            transport is not None and getattr(transport, "bounds_whole_attempt", False) is True and not _respx_patched()
        )

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.http.aclose()


def request_id_of(response: httpx.Response) -> str | None:
    """The server's request id (`x-request-id`, or `x-gradient-request-id`), if it sent one."""
    return _request_id(response.headers.raw)


def _request_id(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in raw_headers:  # one pass over the raw pairs: cheaper than two lookups
        lowered = key.lower()
        if lowered == b"x-request-id" or lowered == b"x-gradient-request-id":
            return value.decode("utf-8", "replace")
    return None


class AsyncGradient:
    """Async client for the Gradient AI API. One per application (and event loop); share it between tasks.

    Args:
        access_token: bearer token; default GRADIENT_ACCESS_TOKEN.
        workspace_id: workspace; default GRADIENT_WORKSPACE_ID.
        base_url: API root including `/api`; default GRADIENT_API_URL or https://api.gradient.ai/api.
        timeout: seconds, an `httpx.Timeout`, or None for no timeout (default 120 s, 10 s to connect).
            Seconds bound each attempt as a whole (connect, send, wait, body); with an `httpx.Timeout`,
            `read` bounds the whole attempt, `connect`/`write` their phase and `pool` the wait for a
            concurrency slot.
        max_retries: retries per call (default 2); shorthand for `retry=RetryPolicy(max_retries=...)`.
        retry: the full `RetryPolicy` (its `deadline` bounds each call as a whole, waits included).
        max_concurrency: requests in flight at once across every task using this client (default 64);
            the connection pool is sized to match.
        max_queue: most calls waiting for a concurrency slot (default None: no bound); one more
            fails at once with `QueueFullError`, so a service can shed load.
        rate_control: client-wide rate control (default `RateControl()`: on a 429 every call of the
            client pauses for the Retry-After, then sends are paced at the rate the server accepts);
            None turns it off (each call then waits out its own 429s).
        max_response_bytes: larger response bodies raise `APIResponseValidationError` (default 32 MiB).
        http_client: your own `httpx.AsyncClient`; never closed by us.
        transport: an httpx transport for the client we build (e.g. `httpx.ASGITransport(app)`).
        default_headers: extra headers sent on every request.
        hooks: `Hooks` called for every HTTP attempt, retry and finished call (also for batch items).
        tracing: OpenTelemetry spans and metrics when the application has set a provider (default True).
        trace_content: put prompt and completion text in spans (default False; the token never is).

    Example::

        async with AsyncGradient(max_concurrency=32, max_retries=4) as client:
            models = await client.models.list(only_base=True)

        AsyncGradient(max_queue=200, timeout=httpx.Timeout(30.0, pool=2.0))   # a service shedding load
        AsyncGradient(rate_control=RateControl(requests_per_minute=3000))     # a known budget too
    """

    def __init__(
        self,
        *,
        access_token: str | None = None,
        workspace_id: str | None = None,
        base_url: str | None = None,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
        max_queue: int | None = None,
        rate_control: RateControl | NotGiven | None = NOT_GIVEN,
        max_response_bytes: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        default_headers: Mapping[str, str] | None = None,
        hooks: Hooks | None = None,
        tracing: bool = True,
        trace_content: bool = False,
    ) -> None:
        setup_logging()
        if http_client is not None and transport is not None:
            raise ValidationError("pass either http_client or transport, not both")
        policy = retry or RetryPolicy()
        if not isinstance(max_retries, NotGiven):
            policy = dataclasses.replace(policy, max_retries=max_retries)
        overrides: dict[str, Any] = {
            "retry": policy,
            "default_headers": _header_items(default_headers, "default_headers"),
        }
        if not isinstance(timeout, NotGiven):
            overrides["timeout"] = to_httpx_timeout(timeout)
        if max_concurrency is not None:
            overrides["max_concurrency"] = max_concurrency
        if max_queue is not None:
            overrides["max_queue"] = max_queue
        if not isinstance(rate_control, NotGiven):
            overrides["rate_control"] = rate_control
        if max_response_bytes is not None:
            overrides["max_response_bytes"] = max_response_bytes
        config = ClientConfig.from_env(
            access_token=access_token, workspace_id=workspace_id, base_url=base_url, **overrides
        )
        if http_client is None:
            built = transport or AutoTransport(
                max_connections=config.max_concurrency, keepalive_expiry=config.keepalive_expiry
            )
            http = httpx.AsyncClient(transport=built, timeout=config.timeout, follow_redirects=False)
            pool = _Pool(http, built, config=config, tracing=tracing)
        else:
            pool = _Pool(http_client, None, config=config, tracing=tracing)
        self._init(config, pool, root=True, instrumentation=Instrumentation.of(hooks, tracing, trace_content))

    def _init(self, config: ClientConfig, pool: _Pool, *, root: bool, instrumentation: Instrumentation) -> None:
        for setting, value in (("access_token", config.access_token.reveal()), ("workspace_id", config.workspace_id)):
            problem = _header_value_problem(value)
            if problem is not None:  # never the value: it is a credential
                env = "GRADIENT_ACCESS_TOKEN" if setting == "access_token" else "GRADIENT_WORKSPACE_ID"
                raise ValidationError(f"{setting} (or {env}) {problem}; strip it")
        self._config = config
        self._pool = pool
        self._root = root
        self._instrumentation = instrumentation  # hooks + OpenTelemetry (_hooks.py); with_options copies share it
        self._server = httpx.URL(config.base_url)
        self._headers = httpx.Headers(
            {
                "Authorization": f"Bearer {config.access_token.reveal()}",
                "x-gradient-workspace-id": config.workspace_id,
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        for key, value in config.default_headers:  # replaces case-insensitively (one Authorization, not two)
            self._headers[key] = value
        self._json_headers = self._headers.copy()
        self._json_headers["Content-Type"] = "application/json"
        self._header_pairs = str_pairs(self._headers)
        self._json_header_pairs = str_pairs(self._json_headers)
        self._timeouts = _Timeouts.of(config.timeout)
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[httpx.URL, str]] = {}
        self._policies: dict[int, RetryPolicy] = {}

    # -- public surface -------------------------------------------------------------------

    @property
    def workspace_id(self) -> str:
        return self._config.workspace_id

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def config(self) -> ClientConfig:
        """The client's settings (the token inside is a `Secret`)."""
        return self._config

    @property
    def hooks(self) -> Hooks:
        """The `Hooks` this client (and its `with_options` copies) calls."""
        return self._instrumentation.hooks

    @property
    def limiter(self) -> Limiter:
        """The limiter every call, batch and `with_options` copy of this client goes through. Use it
        inside the event loop.

        Example::

            stats = client.limiter.stats()   # in_flight, waiting, window, pace, paused_for
        """
        return self._pool.limiter

    @property
    def is_closed(self) -> bool:
        """True once `aclose()` began: no new call starts."""
        return self._pool.closed

    @cached_property
    def models(self) -> AsyncModels:
        from gradient_async.resources.models import AsyncModels

        return AsyncModels(self)

    @cached_property
    def adapters(self) -> AsyncAdapters:
        from gradient_async.resources.adapters import AsyncAdapters

        return AsyncAdapters(self)

    @cached_property
    def completions(self) -> AsyncCompletions:
        from gradient_async.resources.completions import AsyncCompletions

        return AsyncCompletions(self)

    @cached_property
    def fine_tunes(self) -> AsyncFineTunes:
        from gradient_async.resources.fine_tunes import AsyncFineTunes

        return AsyncFineTunes(self)

    @cached_property
    def embeddings(self) -> AsyncEmbeddings:
        from gradient_async.resources.embeddings import AsyncEmbeddings

        return AsyncEmbeddings(self)

    def with_options(
        self,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
        default_headers: Mapping[str, str] | NotGiven = NOT_GIVEN,
        hooks: Hooks | NotGiven = NOT_GIVEN,
    ) -> AsyncGradient:
        """A copy with other defaults, sharing this client's pool and concurrency limit.
        `default_headers` are added to (and override) this client's; `hooks` replace its hooks.

        Example::

            patient = client.with_options(timeout=600, max_retries=5, default_headers={"x-team": "search"})
            await patient.fine_tunes.create(adapter_id, samples=[...])
        """
        policy = given(retry, self._config.retry)
        if not isinstance(max_retries, NotGiven):
            policy = dataclasses.replace(policy, max_retries=max_retries)
        changes: dict[str, Any] = {"retry": policy}
        if not isinstance(timeout, NotGiven):
            changes["timeout"] = to_httpx_timeout(timeout)
        if not isinstance(default_headers, NotGiven):
            merged = {key.lower(): (key, value) for key, value in self._config.default_headers}
            merged.update(
                (key.lower(), (key, value)) for key, value in _header_items(default_headers, "default_headers")
            )
            changes["default_headers"] = tuple(merged.values())  # names are case-insensitive: a new one replaces
        instrumentation = self._instrumentation
        if not isinstance(hooks, NotGiven):
            instrumentation = Instrumentation.of(hooks, instrumentation.tracing, instrumentation.trace_content)
        clone = object.__new__(AsyncGradient)
        clone._init(self._config.replace(**changes), self._pool, root=False, instrumentation=instrumentation)
        return clone

    async def aclose(self, *, timeout: float | None = 0.0) -> None:
        """Close the client: no new call starts (`ClientClosedError`), then the connection pool is
        closed (unless you passed `http_client`). With `timeout`, calls already in flight get up to
        that many seconds to finish first (None: as long as they need); then the pool's connections
        are closed, so calls still running on them fail with `ClientClosedError` and are never retried
        (with your own `http_client` or `transport`, nothing is cut: such calls finish, and no attempt
        or retry starts after the close). Copies made by `with_options` share the pool:
        closing one of them closes nothing.

        Example::

            await client.aclose(timeout=30)   # drain: let in-flight calls finish, at most 30 s
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):
            raise ValidationError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
        pool = self._pool
        if not self._root or pool.state is _State.CLOSED:
            return
        try:
            if pool.state is _State.OPEN:
                pool.state = _State.CLOSING
                if timeout != 0 and pool.active:
                    pool.drained = anyio.Event()
                    with anyio.move_on_after(timeout):
                        await pool.drained.wait()
        finally:  # also when the drain itself is cancelled: the client ends up closed, never half-open
            pool.state = _State.CLOSED
            if pool._limiter is not None:
                pool._limiter.close()  # calls waiting for a slot or in a 429 pause fail now, not when it ends
            with anyio.CancelScope(shield=True):
                await pool.aclose()

    async def __aenter__(self) -> AsyncGradient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncGradient(base_url={self.base_url!r}, workspace_id={self.workspace_id!r}, access_token='***')"

    async def with_raw_response(
        self, call: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> RawResponse[T]:
        """Run `call(*args, **kwargs)` (any client method or handle method) and return its value
        with the HTTP response of its (last) request: status, headers, request id, retries taken.

        Example::

            raw = await client.with_raw_response(client.models.list, only_base=True)
            print(raw.status_code, raw.request_id, raw.headers.get("x-ratelimit-remaining"))
            bases = raw.parsed
        """
        sink: list[tuple[httpx.Response, int]] = []
        token = _RAW_SINK.set(sink)
        try:
            value = await call(*args, **kwargs)
        finally:
            _RAW_SINK.reset(token)
        if not sink:
            raise ValidationError(f"{getattr(call, '__qualname__', call)!r} sent no request through this client")
        response, retries = sink[-1]
        return RawResponse(parsed=value, http_response=response, retries_taken=retries)

    # -- the request path -----------------------------------------------------------------

    @overload
    async def request(self, options: RequestOptions, parse: Callable[[Any], T]) -> T: ...

    @overload
    async def request(self, options: RequestOptions, parse: None) -> None: ...

    async def request(self, options: RequestOptions, parse: Callable[[Any], T] | None) -> T | None:
        """Send one call and parse its JSON body with `parse` (None: the body is ignored).

        One call = deadline scope (RetryPolicy.deadline, a wall clock over everything) → per attempt:
        concurrency slot (pool timeout) → send (bounded as a whole by the timeout) → status mapping;
        between attempts the policy's `next_wait` decides. Resources call this; users rarely need to.
        Hooks and OpenTelemetry see the call through a `CallScope` (None when nothing observes it).
        """
        scope = self._instrumentation.start(options, self._server)
        if scope is None:
            return await self._request(options, parse, None)
        try:
            value = await self._request(options, parse, scope)
        except BaseException as exc:
            await scope.failed(exc)
            raise
        await scope.finished(value)
        return value

    async def _request(
        self, options: RequestOptions, parse: Callable[[Any], T] | None, scope: CallScope | None
    ) -> T | None:
        pool = self._pool
        if pool.state is not _State.OPEN:
            raise ClientClosedError("this AsyncGradient is closed; create a new client")
        if _get_running_loop() is not pool.loop:
            pool.bind_loop()
        timeouts = (
            self._timeouts if isinstance(options.timeout, NotGiven) else _Timeouts.of(to_httpx_timeout(options.timeout))
        )
        call = self._prepare(options, timeouts)
        policy = self._config.retry
        if not isinstance(options.max_retries, NotGiven) and options.max_retries != policy.max_retries:
            policy = self._policy_with(options.max_retries)
        pool.active += 1
        try:
            deadline = policy.deadline
            if deadline is None:
                answer, retries = await self._attempts(call, options, timeouts, policy, 0.0, scope)
            else:
                try:
                    with anyio.fail_after(deadline):
                        answer, retries = await self._attempts(
                            call, options, timeouts, policy, anyio.current_time(), scope
                        )
                except TimeoutError as exc:
                    raise APITimeoutError(
                        f"{call.describe()}: no answer within the {deadline} s deadline "
                        "(RetryPolicy.deadline bounds the whole call: slot wait, attempts, waits)",
                        request=call.request,
                    ) from exc
        finally:
            pool.active -= 1
            if pool.drained is not None and pool.active == 0:
                pool.drained.set()
        sink = _RAW_SINK.get()
        if sink is not None:
            sink.append((answer.response, retries))
        if parse is None:
            return None
        return _parse(answer, parse)

    def _policy_with(self, max_retries: int) -> RetryPolicy:
        """The client's policy with another `max_retries` (kept: batches ask for 0 on every item)."""
        if type(max_retries) is not int:  # True == 1 == 1.0: only exact ints share a cached policy
            return dataclasses.replace(self._config.retry, max_retries=max_retries)  # validates (raises)
        policy = self._policies.get(max_retries)
        if policy is None:
            policy = dataclasses.replace(self._config.retry, max_retries=max_retries)
            if len(self._policies) < 64:
                self._policies[max_retries] = policy
        return policy

    def _prepare(self, options: RequestOptions, timeouts: _Timeouts) -> _Call:
        """The HTTP request for `options`, prepared once per call (attempts resend it). Bodies are
        encoded with NaN and infinities refused, before anything is sent."""
        payload = options.json
        if options.extra_body is not None:
            if not isinstance(options.extra_body, Mapping):
                raise ValidationError(f"extra_body must be a mapping, got {type(options.extra_body).__name__}")
            if payload is not None and not isinstance(payload, Mapping):
                raise ValidationError("extra_body needs a JSON object body to merge into")
            payload = {**(payload or {}), **options.extra_body}
        params = options.params
        if options.extra_query is not None:
            params = {**(params or {}), **dict(_string_items(options.extra_query, "extra_query"))}
        if payload is None:
            headers, pairs = self._headers, self._header_pairs
        else:
            headers, pairs = self._json_headers, self._json_header_pairs
        if options.extra_headers is not None:
            headers = headers.copy()
            headers.update(_header_items(options.extra_headers, "extra_headers"))
            pairs = str_pairs(headers)
        url, target = self._url(options.path, params)
        return _Call(
            options.method,
            url,
            target,
            headers,
            pairs,
            None if payload is None else _dumps(payload),
            {"timeout": timeouts.ext, "max_response_bytes": self._pool.max_response_bytes},
        )

    async def _attempts(
        self,
        call: _Call,
        options: RequestOptions,
        timeouts: _Timeouts,
        policy: RetryPolicy,
        started: float,
        scope: CallScope | None,
    ) -> tuple[_Answer, int]:
        """The one retry loop: attempt, ask `policy.next_wait`, wait, repeat. Nothing is built for it
        unless the first attempt fails and the call may be retried."""
        cost = estimate_cost(options.json) if self._pool.limiter.counts_tokens else 0.0
        try:
            return await self._attempt(call, timeouts, scope, cost), 0
        except APIError as first:
            if policy.max_retries == 0:
                raise
            error = first
        idempotent = options.is_idempotent
        attempt = rate_limited = 0
        while True:
            attempt += 1
            if isinstance(error, RateLimitError):
                rate_limited += 1
            elapsed = anyio.current_time() - started if policy.deadline is not None else 0.0
            wait = policy.next_wait(error, attempt, elapsed, idempotent=idempotent, rate_limited=rate_limited)
            if wait is None:
                error.retries_taken = attempt - 1
                raise error
            if self._pool.state is _State.CLOSED:
                raise ClientClosedError("this AsyncGradient was closed; the call is not retried") from error
            logger.debug(
                "retrying request: attempt=%d status=%s error=%s wait=%.3fs",
                attempt,
                getattr(error, "status_code", None),
                type(error).__name__,
                wait,
            )
            if scope is not None:  # hooks, the deprecated per-call on_retry, spans and metrics
                await scope.retry_scheduled(error, attempt, wait)
            if isinstance(error, RateLimitError):
                wait = self._pool.limiter.uncovered(wait)  # 0 while the client-wide 429 pause runs
            if wait > 0:
                await policy.sleep(wait)
            try:
                return await self._attempt(call, timeouts, scope, cost), attempt
            except APIError as exc:
                error = exc

    async def _attempt(self, call: _Call, timeouts: _Timeouts, scope: CallScope | None, cost: float = 0.0) -> _Answer:
        """`_send_once`, reported to the call's hooks and spans when something observes it."""
        if scope is None:
            return await self._send_once(call, timeouts, cost)
        request = call.request
        call.observed = True
        await scope.attempt_started(request)
        try:
            answer = await self._send_once(call, timeouts, cost)
        except APIError as exc:
            await scope.attempt_ended(request, None, exc)
            raise
        await scope.attempt_ended(request, answer.response, None)
        return answer

    async def _send_once(self, call: _Call, timeouts: _Timeouts, cost: float = 0.0) -> _Answer:
        """One attempt: admission by the client's limiter (a slot, any 429 pause, the pace; at most the
        pool timeout), then the exchange, bounded as a whole by the timeout. Every answer is reported
        to the limiter: a 429 slows the whole client down, a success lets it speed up."""
        pool = self._pool
        limiter = pool.limiter
        slot = limiter.try_acquire(cost)  # the common case: a free slot, nothing to wait for
        if slot is None:
            patient = PATIENT.get()  # batch workers: never shed, no pool timeout (the batch bounds itself)
            try:
                slot = await limiter.acquire(
                    cost=cost, pool_timeout=None if patient else timeouts.pool, shed=not patient
                )
            except PoolTimeoutError as exc:
                exc.request = call.request
                exc.message = f"{call.describe()}: {exc.message}"
                exc.args = (exc.message,)
                raise
        try:
            if pool.state is _State.CLOSED:
                raise ClientClosedError("this AsyncGradient was closed; no new attempt is started")
            logger.debug("request: %s %s", call.method, call.url)
            if timeouts.attempt is None or pool.bounds_whole_attempt():
                answer = await pool.send(call)
            else:
                with anyio.fail_after(timeouts.attempt):
                    answer = await pool.send(call)
        except TimeoutError as exc:  # the whole-attempt bound
            raise APITimeoutError(
                f"{call.describe()} timed out: no complete response within {timeouts.attempt} s",
                request=call.request,
            ) from exc
        except UnusableBody as exc:  # too large, or undecodable
            exc.response.request = call.request
            raise APIResponseValidationError(
                f"the response of {call.describe()} {exc.problem}", response=exc.response, body=None
            ) from None
        except httpx.TransportError as exc:
            exc.request = call.request  # the hot path raised it without one
            if pool.state is _State.CLOSED:
                raise ClientClosedError("this AsyncGradient was closed while the call was in flight") from exc
            if isinstance(exc, httpx.TimeoutException):
                sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
                if isinstance(exc, httpx.ConnectTimeout):
                    what = f"no connection within {timeouts.ext.get('connect')} s"
                else:
                    what = f"no complete response within {timeouts.attempt} s"
                raise APITimeoutError(
                    f"{call.describe()} timed out: {what} ({exc})",
                    request=call.request,
                    sent=sent,
                ) from exc
            sent = not isinstance(exc, httpx.ConnectError)
            raise APIConnectionError(
                f"{call.describe()} failed: {exc or type(exc).__name__}",
                request=call.request,
                sent=sent,
            ) from exc
        finally:
            limiter.release(slot)  # a no-op after on_success / on_rate_limited below
        if not answer.is_success:
            error = make_status_error(answer.response)
            if isinstance(error, RateLimitError):
                policy = self._config.retry
                wait = min(policy.compute_wait(0, error, _RNG), policy.max_retry_after)
                limiter.on_rate_limited(slot, wait)  # the client-wide pause (unless rate control is off)
            raise error
        limiter.on_success(slot)
        return answer

    def _url(self, path: str, params: Mapping[str, str] | None) -> tuple[httpx.URL, str]:
        key = (path, tuple(params.items()) if params else ())
        found = self._urls.get(key)
        if found is None:
            url = httpx.URL(self._config.base_url + path, params=params)
            found = (url, str(url))
            if len(self._urls) >= 512:
                self._urls.clear()
            self._urls[key] = found
        return found


def _string_items(items: Mapping[str, str] | None, name: str) -> tuple[tuple[str, str], ...]:
    if items is None:
        return ()
    if not isinstance(items, Mapping):
        raise ValidationError(f"{name} must be a mapping of strings to strings, got {type(items).__name__}")
    for key, value in items.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError(f"{name} must map strings to strings, got {key!r}: {value!r}")
    return tuple(items.items())


_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE: Final = re.compile(r"[\t\x20-\x7e]*")
_FRAMING_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "host", "connection"})


def _header_value_problem(value: str) -> str | None:
    """What keeps `value` from being sent as a header value (without quoting it), or None."""
    if _HEADER_VALUE.fullmatch(value):
        return None
    position, char = next((i, c) for i, c in enumerate(value) if not _HEADER_VALUE.fullmatch(c))
    if char in "\r\n":
        hint = " (a trailing newline, e.g. from a file?)" if not value[position:].strip() else ""
        return f"contains a line break at position {position}{hint}"
    if char.isascii():
        return f"contains a control character at position {position}"
    return f"contains a non-ASCII character at position {position}"


def _header_items(headers: Mapping[str, str] | None, name: str) -> tuple[tuple[str, str], ...]:
    """`headers` checked before anything is sent: HTTP token names, printable ASCII values (no CR/LF,
    which would split the request), and none of the headers the client frames the request with."""
    items = _string_items(headers, name)
    for key, value in items:
        if not _HEADER_NAME.fullmatch(key):
            raise ValidationError(f"{name}: {key!r} is not a valid HTTP header name")
        problem = _header_value_problem(value)
        if problem is not None:  # never the value itself: headers carry secrets
            raise ValidationError(f"{name}: the value of {key!r} {problem}; header values must be printable ASCII")
        if key.lower() in _FRAMING_HEADERS:
            raise ValidationError(f"{name}: {key!r} is set by the client from the request itself; leave it out")
    return items


def _dumps(payload: Any) -> bytes:
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError as exc:  # NaN / Infinity: not JSON, and never what the caller meant
        raise ValidationError(f"the request body contains a value JSON cannot carry: {exc}") from None
    except TypeError as exc:
        raise ValidationError(f"the request body is not JSON-serializable: {exc}") from None


def _parse(answer: _Answer, parse: Callable[[Any], T]) -> T:
    raw = answer.content
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, RecursionError) as exc:  # not JSON, or nested deeper than Python parses
        response = answer.response
        snippet = response.text[:200]
        raise APIResponseValidationError(
            f"expected a JSON body from {response.request.method} {response.request.url}, got: {snippet!r}",
            response=response,
            body=response.text,
        ) from exc
    try:
        value = parse(data)
    except (pydantic.ValidationError, ValueError, TypeError, KeyError) as exc:
        response = answer.response
        raise APIResponseValidationError(
            f"the response of {response.request.method} {response.request.url} does not match the API contract: {exc}",
            response=response,
            body=data,
        ) from exc
    if isinstance(value, pydantic.BaseModel) and "_request_id" in type(value).__private_attributes__:
        request_id = answer.request_id
        if request_id is not None:
            value._request_id = request_id  # type: ignore[attr-defined]  # GradientModel's private field
    return value
