"""HTTP transports: a fast aiohttp-backed one under asyncio, httpx's own elsewhere (trio).

httpx over httpcore spends several times more client CPU per request than aiohttp at
high concurrency (encode/httpcore#1035). `AiohttpTransport` moves bytes with aiohttp's
C-accelerated HTTP/1.1 client: as an httpx transport (`handle_async_request`, httpx's request and
response objects), and through `exchange()`, the client's hot path, without building them.
`AutoTransport` picks one of the two on first use, once the running async library is known.

Example::

    transport = AutoTransport(max_connections=64)
    async with httpx.AsyncClient(transport=transport) as http:
        ...
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import httpx

__all__ = [
    "AiohttpTransport",
    "AutoTransport",
    "Exchange",
    "ResponseTooLarge",
    "UndecodableBody",
    "UnusableBody",
    "content_coding",
    "decoded_response",
    "str_pairs",
]


class UnusableBody(Exception):
    """A response whose body the client will not use. `response` has the status and headers, not the
    body (and no request on the hot path: the client sets it); `problem` says what is wrong, as in
    "the response of GET ... {problem}". The client turns it into APIResponseValidationError."""

    def __init__(self, response: httpx.Response, problem: str) -> None:
        super().__init__(f"the response body {problem}")
        self.response = response
        self.problem = problem


class ResponseTooLarge(UnusableBody):
    """A response body over the size limit (`exchange(limit=...)`, or `request.extensions["max_response_bytes"]`);
    raised before reading it whole."""

    def __init__(self, response: httpx.Response, size: int, limit: int) -> None:
        super().__init__(response, f"is larger than max_response_bytes ({size} > {limit} bytes)")
        self.size = size
        self.limit = limit


class UndecodableBody(UnusableBody):
    """A body whose `Content-Encoding` cannot be decoded (bad gzip, an unknown coding)."""

    def __init__(self, response: httpx.Response, reason: str) -> None:
        coding = response.headers.get("content-encoding")
        super().__init__(response, f"cannot be decoded ({reason}); its Content-Encoding is {coding!r}")
        self.reason = reason


def content_coding(header: str | None) -> str:
    """A `Content-Encoding` value normalized: lower case, "" for none or identity."""
    coding = (header or "").strip().lower()
    return "" if coding == "identity" else coding


def decoded_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    content: bytes,
    request: httpx.Request | None,
    extensions: dict[str, Any] | None = None,
    *,
    limit: int | None = None,
) -> httpx.Response:
    """`httpx.Response` with its body read (and decoded: httpx applies the `Content-Encoding`);
    UndecodableBody when it cannot be decoded, ResponseTooLarge when it decodes to more than `limit`
    bytes (gzip and deflate are measured before they are inflated whole: no decompression bomb)."""
    coding = content_coding(next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-encoding"), None))
    if limit is not None and coding in _ZLIB_CODINGS:
        inflated = _inflated_size(content, coding, limit)
        if inflated > limit:
            raise ResponseTooLarge(httpx.Response(status, headers=headers, request=request), inflated, limit)
    try:
        response = httpx.Response(status, headers=headers, content=content, request=request, extensions=extensions)
    except httpx.DecodingError as exc:
        raise UndecodableBody(httpx.Response(status, headers=headers, request=request), str(exc)) from None
    if limit is not None and coding and len(response.content) > limit:  # other codings (br, zstd): measured after
        raise ResponseTooLarge(httpx.Response(status, headers=headers, request=request), len(response.content), limit)
    return response


_ZLIB_CODINGS: Final = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _inflated_size(content: bytes, coding: str, limit: int) -> int:
    """How many bytes `content` inflates to, counted in 64 KiB steps and no further than past
    `limit` (constant memory); 0 when it is not valid (httpx's own decoder then says why)."""
    wbits = _ZLIB_CODINGS[coding]
    for attempt in (wbits, -zlib.MAX_WBITS) if coding == "deflate" else (wbits,):  # deflate: zlib, or raw
        inflater = zlib.decompressobj(attempt)
        size = 0
        data = content
        try:
            while data and not inflater.eof:
                size += len(inflater.decompress(data, 65536))
                if size > limit:
                    return size
                data = inflater.unconsumed_tail
        except zlib.error:
            continue
        return size
    return 0


def str_pairs(headers: httpx.Headers) -> list[tuple[str, str]]:
    """Header pairs as str, decoded once from the raw bytes (httpx's `multi_items()` re-detects the
    encoding per header)."""
    return [(key.decode("utf-8"), value.decode("utf-8")) for key, value in headers.raw]


def _parser_detail(exc: aiohttp.ClientResponseError) -> str:
    """aiohttp's parser message without its internal `400, message='...'` wrapping, on one line."""
    detail = str(exc.message)
    wrapped = re.fullmatch(r"\d{3}, message=(['\"])(.*)\1", detail, re.S)
    if wrapped:
        detail = wrapped.group(2).replace("\\n", " ")
    return " ".join(detail.split())[:200]


def _map_error(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError:
    """One place that turns aiohttp/asyncio failures into httpx's exception classes.

    Only a connect failure or connect timeout means the request was certainly never sent;
    every other failure is mapped to a class that the retry policy treats as "may have arrived".
    """
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed answer (its "status" is aiohttp's own code)
        return httpx.RemoteProtocolError(
            f"the server sent an invalid HTTP response: {_parser_detail(exc)}", request=request
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.ReadError(message, request=request)


@dataclass(slots=True)
class Exchange:
    """One finished HTTP/1.1 exchange as aiohttp delivers it: status, raw header pairs, whole body
    (still encoded when `content_encoding`, normalized by `content_coding`, names a coding). The
    client builds httpx objects from it only when something needs them (`response()`, which also
    decodes the body).

    Example::

        exchange = await transport.exchange("GET", url, [], None, timeouts={}, limit=None)
        print(exchange.status, exchange.content)
    """

    status: int
    reason: str | None
    headers: list[tuple[bytes, bytes]]
    content: bytes
    content_encoding: str = ""
    limit: int | None = None  # the size cap for the decoded body

    def response(self, request: httpx.Request | None = None) -> httpx.Response:
        """The exchange as an `httpx.Response` (body already read)."""
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if self.reason:
            extensions["reason_phrase"] = self.reason.encode("ascii", "replace")
        return decoded_response(self.status, self.headers, self.content, request, extensions, limit=self.limit)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends requests over one pooled aiohttp session (asyncio only).

    The session is created lazily inside the running loop and closed by `aclose()`.
    Bodies are read whole (the Gradient API never streams), which is also the fastest path.
    The `read` timeout bounds the whole exchange (aiohttp's `total`), so the client needs no
    cancel scope of its own per attempt (`bounds_whole_attempt`). `exchange()` is the same
    exchange without httpx's request and response objects (the client's hot path).
    """

    bounds_whole_attempt = True

    def __init__(self, *, max_connections: int = 64, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._timeout_key: Mapping[str, float | None] | None = None
        self._timeout = aiohttp.ClientTimeout()

    def _get_session(self, request: httpx.Request | None) -> aiohttp.ClientSession:
        if self._closed:  # never re-created after aclose(): a closed client sends nothing
            raise httpx.ConnectError("the transport is closed", request=request)
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _client_timeout(self, timeouts: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's timeout fields as aiohttp's; the last one is kept (clients reuse one mapping)."""
        if timeouts is not self._timeout_key:
            self._timeout = aiohttp.ClientTimeout(
                total=timeouts.get("read"),  # the whole exchange: a server trickling bytes cannot stretch it
                connect=timeouts.get("pool"),
                sock_connect=timeouts.get("connect"),
                sock_read=timeouts.get("read"),
            )
            self._timeout_key = timeouts
        return self._timeout

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        timeouts: Mapping[str, float | None],
        limit: int | None,
        request: httpx.Request | None = None,
    ) -> Exchange:
        """Send one request and read its whole body (at most `limit` bytes, else ResponseTooLarge).
        Failures are httpx's transport errors, carrying `request` when given."""
        session = self._get_session(request)
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._client_timeout(timeouts),
            ) as response:
                raw_headers: list[tuple[bytes, bytes]] = list(response.raw_headers)
                status = response.status
                if limit is None:
                    content = await response.read()
                else:
                    content = await _read_capped(response, limit, status, raw_headers, request)
                coding = content_coding(response.headers.get("Content-Encoding"))
                return Exchange(status, response.reason, raw_headers, content, coding, limit)
        except (TimeoutError, aiohttp.ClientError) as exc:
            mapped = _map_error(exc, request)
            if not isinstance(exc, aiohttp.ClientResponseError):
                raise mapped from exc
        # aiohttp's ClientResponseError holds the request's headers (the token): raised out here, the
        # mapped error carries neither it as a cause nor as a context
        raise mapped

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = await self.exchange(
            request.method,
            str(request.url),
            str_pairs(request.headers),
            request.content or None,
            timeouts=request.extensions.get("timeout", {}),
            limit=request.extensions.get("max_response_bytes"),
            request=request,
        )
        return exchange.response(request)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()


async def _read_capped(
    response: aiohttp.ClientResponse,
    limit: int,
    status: int,
    headers: list[tuple[bytes, bytes]],
    request: httpx.Request | None,
) -> bytes:
    """The body, or ResponseTooLarge as soon as it is known to pass `limit` bytes."""
    declared = response.content_length
    if declared is not None and declared <= limit:
        return await response.read()
    size = 0 if declared is None else declared
    if size <= limit:
        chunks: list[bytes] = []
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
        else:
            return b"".join(chunks)
    response.close()  # drop the connection rather than reading the rest
    raise ResponseTooLarge(httpx.Response(status, headers=headers, request=request), size, limit)


class AutoTransport(httpx.AsyncBaseTransport):
    """aiohttp under asyncio, httpx's AsyncHTTPTransport under anything else; chosen on first request."""

    def __init__(self, *, max_connections: int = 64, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._inner: httpx.AsyncBaseTransport | None = None
        self._closed = False

    @property
    def bounds_whole_attempt(self) -> bool:
        """Whether the transport in use bounds a whole exchange by the read timeout itself."""
        return getattr(self._inner, "bounds_whole_attempt", False) is True

    @property
    def inner(self) -> httpx.AsyncBaseTransport | None:
        """The transport in use, or None before the first request."""
        return self._inner

    def aiohttp_transport(self) -> AiohttpTransport | None:
        """The aiohttp transport when running under asyncio (chosen now if not yet), else None."""
        if self._inner is None and not self._closed:
            self._inner = self._choose()
        inner = self._inner
        return inner if type(inner) is AiohttpTransport else None

    def _choose(self) -> httpx.AsyncBaseTransport:
        try:
            asyncio.get_running_loop()
            on_asyncio = True
        except RuntimeError:
            on_asyncio = False
        if on_asyncio:
            return AiohttpTransport(max_connections=self._max_connections, keepalive_expiry=self._keepalive_expiry)
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
            keepalive_expiry=self._keepalive_expiry,
        )
        return httpx.AsyncHTTPTransport(limits=limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:  # never re-opened after aclose(): a closed client sends nothing
            raise httpx.ConnectError("the transport is closed", request=request)
        if self._inner is None:
            self._inner = self._choose()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        self._closed = True
        if self._inner is not None:
            await self._inner.aclose()
