"""`AsyncGradient`: the client. It owns the connection pool, the concurrency limiter and the
one retry loop; resources only describe requests.

Example::

    async with AsyncGradient() as client:          # GRADIENT_ACCESS_TOKEN / GRADIENT_WORKSPACE_ID
        bases = await client.models.list(only_base=True)
        adapter = await bases[-1].create_adapter(name="my_model_adapter")
        print((await adapter.complete(query="Hello")).generated_output)
        await adapter.delete()
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import httpx
import pydantic

from gradient_async._config import (
    NOT_GIVEN,
    ClientConfig,
    NotGiven,
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
    ValidationError,
    make_status_error,
)
from gradient_async._retry import RetryHook, RetryPolicy, build_retrying, logger
from gradient_async._transport import AutoTransport
from gradient_async._version import __version__

if TYPE_CHECKING:
    from gradient_async.resources.adapters import AsyncAdapters
    from gradient_async.resources.completions import AsyncCompletions
    from gradient_async.resources.embeddings import AsyncEmbeddings
    from gradient_async.resources.fine_tunes import AsyncFineTunes
    from gradient_async.resources.models import AsyncModels

__all__ = ["AsyncGradient", "RequestOptions", "USER_AGENT"]

T = TypeVar("T")

USER_AGENT: Final = f"gradient-async/{__version__} ({sys.platform}; python {sys.version_info[0]}.{sys.version_info[1]})"


@dataclass(frozen=True)
class RequestOptions:
    """One API call, as a resource describes it. The client turns it into HTTP attempts."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None
    idempotent: bool = True
    timeout: TimeoutTypes | NotGiven = NOT_GIVEN
    max_retries: int | NotGiven = NOT_GIVEN
    on_retry: RetryHook | None = None


class _Pool:
    """What `with_options` copies share: the HTTP client, the limiter, the open/closed state."""

    def __init__(self, http: httpx.AsyncClient, *, owns_http: bool, max_concurrency: int) -> None:
        self.http = http
        self.owns_http = owns_http
        self.max_concurrency = max_concurrency
        self.closed = False
        self._limiter: anyio.CapacityLimiter | None = None

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send through our own client's transport directly (skipping httpx's auth, redirect,
        cookie and hook machinery, which the Gradient API never uses); a user's client is
        always used through its public `send`."""
        if not self.owns_http:
            return await self.http.send(request)
        transport = self.http._transport_for_url(request.url)
        response = await transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Created on first use, inside the running event loop.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        return self._limiter


class AsyncGradient:
    """Async client for the Gradient AI API. One per application; share it between tasks.

    Args:
        access_token: bearer token; default GRADIENT_ACCESS_TOKEN.
        workspace_id: workspace; default GRADIENT_WORKSPACE_ID.
        base_url: API root including `/api`; default GRADIENT_API_URL or https://api.gradient.ai/api.
        timeout: seconds, an `httpx.Timeout`, or None for no timeout (default 120 s, 10 s to connect).
        max_retries: retries per call (default 2); shorthand for `retry=RetryPolicy(max_retries=...)`.
        retry: the full `RetryPolicy`.
        max_concurrency: requests in flight at once across every task using this client (default 64);
            the connection pool is sized to match.
        http_client: your own `httpx.AsyncClient`; never closed by us.
        transport: an httpx transport for the client we build (e.g. `httpx.ASGITransport(app)`).
        default_headers: extra headers sent on every request.

    Example::

        async with AsyncGradient(max_concurrency=32, max_retries=4) as client:
            models = await client.models.list(only_base=True)
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
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValidationError("pass either http_client or transport, not both")
        policy = retry or RetryPolicy()
        if not isinstance(max_retries, NotGiven):
            policy = dataclasses.replace(policy, max_retries=max_retries)
        overrides: dict[str, Any] = {
            "retry": policy,
            "default_headers": tuple((default_headers or {}).items()),
        }
        if not isinstance(timeout, NotGiven):
            overrides["timeout"] = to_httpx_timeout(timeout)
        if max_concurrency is not None:
            overrides["max_concurrency"] = max_concurrency
        config = ClientConfig.from_env(
            access_token=access_token, workspace_id=workspace_id, base_url=base_url, **overrides
        )
        if http_client is None:
            http = httpx.AsyncClient(
                transport=transport
                or AutoTransport(max_connections=config.max_concurrency, keepalive_expiry=config.keepalive_expiry),
                timeout=config.timeout,
                follow_redirects=False,
            )
            pool = _Pool(http, owns_http=True, max_concurrency=config.max_concurrency)
        else:
            pool = _Pool(http_client, owns_http=False, max_concurrency=config.max_concurrency)
        self._init(config, pool, root=True)

    def _init(self, config: ClientConfig, pool: _Pool, *, root: bool) -> None:
        self._config = config
        self._pool = pool
        self._root = root
        self._headers = httpx.Headers(
            {
                "Authorization": f"Bearer {config.access_token.reveal()}",
                "x-gradient-workspace-id": config.workspace_id,
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
                **dict(config.default_headers),
            }
        )
        self._json_headers = self._headers.copy()
        self._json_headers["Content-Type"] = "application/json"
        self._timeout_ext: dict[str, Any] = config.timeout.as_dict()
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}

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
    def is_closed(self) -> bool:
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
    ) -> AsyncGradient:
        """A copy with other defaults, sharing this client's pool and concurrency limit.

        Example::

            patient = client.with_options(timeout=600, max_retries=5)
            await patient.fine_tunes.create(adapter_id, samples=[...])
        """
        policy = given(retry, self._config.retry)
        if not isinstance(max_retries, NotGiven):
            policy = dataclasses.replace(policy, max_retries=max_retries)
        changes: dict[str, Any] = {"retry": policy}
        if not isinstance(timeout, NotGiven):
            changes["timeout"] = to_httpx_timeout(timeout)
        clone = object.__new__(AsyncGradient)
        clone._init(self._config.replace(**changes), self._pool, root=False)
        return clone

    async def aclose(self) -> None:
        """Close the connection pool (unless you passed `http_client`). Copies made by
        `with_options` share the pool: closing one of them closes nothing."""
        if not self._root or self._pool.closed:
            return
        self._pool.closed = True
        if self._pool.owns_http:
            await self._pool.http.aclose()

    async def __aenter__(self) -> AsyncGradient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncGradient(base_url={self.base_url!r}, workspace_id={self.workspace_id!r}, access_token='***')"

    # -- the request path -----------------------------------------------------------------

    async def request(self, options: RequestOptions, parse: Callable[[Any], T] | None) -> T | None:
        """Send one call through the retry loop and parse its JSON body with `parse`
        (None: the body is ignored). Resources call this; users rarely need to."""
        if self._pool.closed:
            raise ClientClosedError("this AsyncGradient is closed; create a new client")
        timeout = (
            self._timeout_ext if isinstance(options.timeout, NotGiven) else to_httpx_timeout(options.timeout).as_dict()
        )
        content = None if options.json is None else _dumps(options.json)
        try:
            # The first attempt runs outside tenacity: most calls succeed, and building a
            # retry controller costs more CPU than the request itself.
            response = await self._send_once(options, content, timeout)
        except APIError as first_error:
            response = await self._retry(options, content, timeout, first_error)
        if parse is None:
            return None
        return _parse(response, parse)

    async def _retry(
        self, options: RequestOptions, content: bytes | None, timeout: dict[str, Any], first_error: APIError
    ) -> httpx.Response:
        """Attempts 2..n, driven by tenacity. Attempt 1 (already failed) is replayed as its error,
        so tenacity decides, waits and logs exactly as if it had run it."""
        policy = self._config.retry
        max_retries = given(options.max_retries, policy.max_retries)
        retrying = build_retrying(
            policy, idempotent=options.idempotent, max_retries=max_retries, on_retry=options.on_retry
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    if attempts == 1:
                        raise first_error
                    response = await self._send_once(options, content, timeout)
        except APIError as exc:
            exc.retries_taken = attempts - 1
            raise
        return response

    async def _send_once(
        self, options: RequestOptions, content: bytes | None, timeout: dict[str, Any]
    ) -> httpx.Response:
        request = httpx.Request(
            options.method,
            self._url(options.path, options.params),
            headers=self._headers if content is None else self._json_headers,
            content=content,
            extensions={"timeout": timeout},
        )
        limiter = self._pool.limiter
        borrower = object()
        try:  # the common case takes no trip through the event loop
            limiter.acquire_on_behalf_of_nowait(borrower)
        except anyio.WouldBlock:
            await limiter.acquire_on_behalf_of(borrower)
        try:
            logger.debug("request: %s %s", request.method, request.url)
            response = await self._pool.send(request)
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            raise APITimeoutError(
                f"{request.method} {request.url} timed out: {exc}", request=request, sent=sent
            ) from exc
        except httpx.TransportError as exc:
            sent = not isinstance(exc, httpx.ConnectError)
            raise APIConnectionError(
                f"{request.method} {request.url} failed: {exc or type(exc).__name__}",
                request=request,
                sent=sent,
            ) from exc
        finally:
            limiter.release_on_behalf_of(borrower)
        if not response.is_success:
            raise make_status_error(response)
        return response

    def _url(self, path: str, params: Mapping[str, str] | None) -> httpx.URL:
        key = (path, tuple(params.items()) if params else ())
        url = self._urls.get(key)
        if url is None:
            url = httpx.URL(self._config.base_url + path, params=params)
            if len(self._urls) >= 512:
                self._urls.clear()
            self._urls[key] = url
        return url


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _parse(response: httpx.Response, parse: Callable[[Any], T]) -> T:
    raw = response.content
    try:
        data = json.loads(raw) if raw else None
    except ValueError as exc:
        snippet = response.text[:200]
        raise APIResponseValidationError(
            f"expected a JSON body from {response.request.method} {response.request.url}, got: {snippet!r}",
            response=response,
            body=response.text,
        ) from exc
    try:
        return parse(data)
    except (pydantic.ValidationError, ValueError, TypeError, KeyError) as exc:
        raise APIResponseValidationError(
            f"the response of {response.request.method} {response.request.url} does not match the API contract: {exc}",
            response=response,
            body=data,
        ) from exc
