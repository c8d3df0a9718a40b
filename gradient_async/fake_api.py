"""One scriptable fake Gradient API, for the test kit, this project's tests and the load server.

`FakeGradientAPI` answers every route of the wire contract from memory (no network, no pytest):
models (a base model and one adapter to start with; create and delete change the list), complete
(`"echo: " + query`), fine-tune (8 tokens and 1.5 loss per sample), embeddings (`[len(text), index]`,
answered in reverse order: clients must sort by `index`). A query or embedding input containing
`!status:NNN` is answered with status NNN.

Use it as the transport of a client (`fake.transport()`, `fake.client()`), as a respx side effect
(`fake.handle`, sync), or behind a real socket (`fake.answer(...)`, what `benchmarks/load_server.py` does).

Knobs (change them any time): `latency` (seconds, async handler only), `fail_every` (every n-th
request is a 503), `fail_next` (the next n requests are 503s), `fail_rate` + `seed` (a seeded draw;
`seed < 0` fails exactly every 1/rate-th), `storm` (the next n requests get 429), `max_in_flight_ok`
(more concurrent requests get 429), `rate_limit_rps` + `rate_burst` (token bucket, 429 over it),
`retry_after` (the 429's header), `gate` (an `anyio.Event` every request waits for), `extra`
(fields added to each completion).

Scripting: `fake.add("POST", "/api/models/m/complete", response, ...)` answers that route with each
response in turn (the last one sticks); a response is an `httpx.Response`, a callable
`(request) -> Response` (sync or async), or an exception to raise. `fake.answers[query] = ...`
does the same for one completion query.

Recording: `requests` (every `httpx.Request`), `body(i)`, `bodies(path_suffix)`, `statuses`,
`queries`, `in_flight`, `max_in_flight`.

Example::

    fake = FakeGradientAPI()
    async with fake.client() as client:
        fake.add("POST", f"/api/models/{MOCK_ADAPTER_ID}/complete", httpx.Response(503), httpx.Response(200, json=...))
        print((await client.completions.create(MOCK_ADAPTER_ID, query="Hi")).generated_output)
    assert fake.statuses[503] == 1
"""

from __future__ import annotations

import email.utils
import inspect
import itertools
import json
import math
import random
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import anyio
import httpx

if TYPE_CHECKING:
    from gradient_async._client import AsyncGradient

__all__ = [
    "FAKE_BASE_URL",
    "FAKE_TOKEN",
    "FAKE_WORKSPACE",
    "MOCK_ADAPTER_ID",
    "MOCK_BASE_MODEL_ID",
    "FakeGradientAPI",
    "Responder",
]

FAKE_BASE_URL: Final = "https://api.gradient.ai/api"
FAKE_TOKEN: Final = "gsk-test-token"
FAKE_WORKSPACE: Final = "test-workspace"
MOCK_BASE_MODEL_ID: Final = "99148c6d-c2a0-4fbe-a4a7-e7c05bdb8a09_base_ml_model"
MOCK_ADAPTER_ID: Final = "11111111-2222-3333-4444-555555555555_model_adapter"

Responder: TypeAlias = (
    "httpx.Response | BaseException | Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]"
)

_Answer: TypeAlias = "tuple[int, Any, dict[str, str]]"
"""(status, JSON payload, headers)."""

_FORCED = re.compile(r"!status:(\d{3})")
_ONE = r"([^/?]+)"
_ROUTES: Final = (
    ("GET", re.compile(r"^/models$"), "list_models"),
    ("POST", re.compile(rf"^/models/{_ONE}/complete$"), "complete"),
    ("POST", re.compile(rf"^/models/{_ONE}/fine-tune$"), "fine_tune"),
    ("GET", re.compile(rf"^/models/{_ONE}$"), "get_model"),
    ("POST", re.compile(r"^/models$"), "create_adapter"),
    ("DELETE", re.compile(rf"^/models/{_ONE}$"), "delete_model"),
    ("GET", re.compile(r"^/embeddings$"), "list_embeddings"),
    ("POST", re.compile(rf"^/embeddings/{_ONE}$"), "embed"),
)
_STAMP: Final = "2024-01-10T12:00:00.000Z"


def _json_body(content: bytes) -> dict[str, Any]:
    try:
        data = json.loads(content) if content else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error(status: int, message: str, kind: str = "failed") -> _Answer:
    return status, {"message": message, "type": kind}, {}


@dataclass
class _Bucket:
    rate: float
    burst: float
    clock: Callable[[], float]
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self) -> float:
        """0.0 when admitted, else seconds until a token is free."""
        now = self.clock()
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class FakeGradientAPI:
    """The Gradient API in memory: every route answered, faults on knobs, requests recorded.

    Example::

        fake = FakeGradientAPI(fail_every=3)
        async with fake.client() as client:
            models = await client.models.list()
    """

    base_path: str = "/api"
    latency: float = 0.0
    fail_every: int = 0
    fail_next: int = 0
    fail_rate: float = 0.0
    seed: int = 0
    storm: int = 0
    max_in_flight_ok: int | None = None
    rate_limit_rps: float | None = None
    rate_burst: float | None = None
    retry_after: tuple[str, str] | None = ("Retry-After", "0.002")
    retry_after_format: str | None = None  # "float" | "int" | "ms" | "date": the bucket's real wait in that form
    gate: anyio.Event | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    echo_chars: int | None = None
    record: bool = True
    clock: Callable[[], float] = time.monotonic
    answers: dict[str, Responder] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    queries: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    handled: int = 0
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    script: dict[tuple[str, str], list[Responder]] = field(default_factory=dict, repr=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _fail_debt: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fail_rate < 1.0:
            raise ValueError(f"fail_rate must be in [0, 1), got {self.fail_rate!r}")
        if self.retry_after_format not in (None, "float", "int", "date", "ms"):
            raise ValueError(f"retry_after_format must be float, int, date or ms, got {self.retry_after_format!r}")
        self._rng = random.Random(self.seed)
        self._bucket: _Bucket | None = None
        if not self.models:
            self.models = {
                MOCK_BASE_MODEL_ID: {
                    "id": MOCK_BASE_MODEL_ID,
                    "name": "Mock Base Model",
                    "slug": "mock-base-model",
                    "type": "baseModel",
                    "capabilities": ["complete", "fineTune"],
                },
                MOCK_ADAPTER_ID: self._adapter(MOCK_ADAPTER_ID, "my_model_adapter", MOCK_BASE_MODEL_ID),
            }

    # -- scripting and recording -------------------------------------------------------------

    def add(self, method: str, path: str, *responders: Responder) -> None:
        """Answer `method path` (the full path as sent, percent-encoded, e.g. "/api/models/a%2Fb") with
        each responder in turn; the last one sticks."""
        self.script.setdefault((method.upper(), path), []).extend(responders)

    def body(self, index: int = -1) -> Any:
        """The JSON body of the `index`-th recorded request."""
        return json.loads(self.requests[index].content)

    def bodies(self, suffix: str) -> list[dict[str, Any]]:
        """JSON bodies of the recorded requests whose path ends with `suffix`."""
        return [json.loads(r.content) for r in self.requests if r.url.path.endswith(suffix)]

    @property
    def base_model_ids(self) -> list[str]:
        return [m["id"] for m in self.models.values() if m["type"] == "baseModel"]

    # -- the ways in ---------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request now (sync: no latency, no gate; async scripted handlers are not allowed)."""
        self._begin(request)
        try:
            response = self._respond(request)
            if inspect.isawaitable(response):
                raise TypeError("an async scripted handler needs the async `handler`")
            return self._done(response)
        finally:
            self.in_flight -= 1

    async def handler(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (for `httpx.MockTransport`): waits for `gate` and `latency` first."""
        self._begin(request)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.latency:
                await anyio.sleep(self.latency)
            response = self._respond(request)
            if inspect.isawaitable(response):
                response = await response
            return self._done(response)
        finally:
            self.in_flight -= 1

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answered by this fake."""
        return httpx.MockTransport(self.handler)

    def client(self, *, base_url: str = "http://gradient.test/api", **kwargs: Any) -> AsyncGradient:
        """An `AsyncGradient` whose requests this fake answers (test credentials unless given)."""
        from gradient_async._client import AsyncGradient

        kwargs.setdefault("access_token", FAKE_TOKEN)
        kwargs.setdefault("workspace_id", FAKE_WORKSPACE)
        return AsyncGradient(base_url=base_url, transport=self.transport(), **kwargs)

    def answer(self, method: str, path: str, query: dict[str, str], body: bytes) -> _Answer:
        """(status, JSON payload, headers) for one request, with the fault knobs applied (for raw servers)."""
        fault = self.fault()
        if fault is not None:
            return fault
        return self.route(method, path, query, body)

    # -- inside ----------------------------------------------------------------------------------

    def _begin(self, request: httpx.Request) -> None:
        self.handled += 1
        if self.record:
            self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _done(self, response: httpx.Response) -> httpx.Response:
        self.statuses[response.status_code] += 1
        return response

    def _respond(self, request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        raw_path = request.url.raw_path.split(b"?")[0].decode("ascii")  # still percent-encoded
        key = (request.method, raw_path)
        queue = self.script.get(key)
        if queue:
            return self._use(queue.pop(0) if len(queue) > 1 else queue[0], request)
        if self.answers and request.url.path.endswith("/complete"):
            query = _json_body(request.content).get("query")
            if isinstance(query, str) and query in self.answers:
                self.queries[query] += 1
                return self._use(self.answers[query], request)
        status, payload, headers = self.answer(request.method, raw_path, dict(request.url.params), request.content)
        return httpx.Response(status, json=payload, headers=headers)

    @staticmethod
    def _use(responder: Responder, request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        if isinstance(responder, BaseException):
            raise responder
        if isinstance(responder, httpx.Response):
            return responder
        return responder(request)

    def fault(self) -> _Answer | None:
        """The injected failure for the next request (429 or 503), or None: counts as one request's draw."""
        if self.storm > 0:
            self.storm -= 1
            return self._too_many(None)
        if self.max_in_flight_ok is not None and self.in_flight > self.max_in_flight_ok:
            return self._too_many(None)
        if self.rate_limit_rps:
            if self._bucket is None or self._bucket.rate != self.rate_limit_rps:
                burst = self.rate_burst if self.rate_burst is not None else max(1.0, self.rate_limit_rps / 10)
                self._bucket = _Bucket(self.rate_limit_rps, max(1.0, burst), self.clock)
            wait = self._bucket.take()
            if wait > 0:
                return self._too_many(wait)
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(503, "temporarily unavailable")
        if self.fail_every and self.handled % self.fail_every == 0:
            return _error(503, "temporarily unavailable")
        if self.fail_rate:
            if self.seed >= 0:
                failed = self._rng.random() < self.fail_rate
            else:  # exactly every (1/fail_rate)-th request, evenly spread
                self._fail_debt += self.fail_rate
                failed = self._fail_debt >= 1.0
                if failed:
                    self._fail_debt -= 1.0
            if failed:
                return _error(503, "temporarily unavailable")
        return None

    def _too_many(self, wait: float | None) -> _Answer:
        headers: dict[str, str] = {}
        if wait is not None and self.retry_after_format is not None:
            fmt = self.retry_after_format
            if fmt == "ms":
                headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            elif fmt == "int":
                headers["Retry-After"] = str(max(1, math.ceil(wait)))
            elif fmt == "date":
                headers["Retry-After"] = email.utils.formatdate(time.time() + max(1.0, wait), usegmt=True)
            else:
                headers["Retry-After"] = f"{wait:.3f}"
        elif self.retry_after is not None:
            headers[self.retry_after[0]] = self.retry_after[1]
        return 429, {"message": "rate limit exceeded", "type": "tooManyRequests"}, headers

    def route(self, method: str, path: str, query: dict[str, str], content: bytes) -> _Answer:
        """(status, JSON payload, headers) of the route itself, without faults."""
        body = _json_body(content)
        if not path.startswith(self.base_path):
            return _error(404, f"no route {method} {path}", "notFound")
        rest = path[len(self.base_path) :]
        for route_method, pattern, name in _ROUTES:
            match = pattern.match(rest)
            if route_method == method and match:
                answer: Callable[..., _Answer] = getattr(self, f"_{name}")
                return answer(body, query, *(urllib.parse.unquote(g) for g in match.groups()))
        return _error(404, f"no route {method} {path}", "notFound")

    # -- the routes ------------------------------------------------------------------------------

    @staticmethod
    def _adapter(model_id: str, name: str, base_id: str) -> dict[str, Any]:
        return {
            "id": model_id,
            "name": name,
            "baseModelId": base_id,
            "latestUpdateTime": _STAMP,
            "type": "modelAdapter",
        }

    def _list_models(self, body: dict[str, Any], query: dict[str, str]) -> _Answer:
        only_base = query.get("onlyBase", "false").lower() == "true"
        models = [m for m in self.models.values() if not only_base or m["type"] == "baseModel"]
        return 200, {"models": models}, {}

    def _get_model(self, body: dict[str, Any], query: dict[str, str], model_id: str) -> _Answer:
        model = self.models.get(model_id)
        if model is None:
            return _error(404, f"no model {model_id!r}", "unknownModelAdapter")
        return 200, model, {}

    def _create_adapter(self, body: dict[str, Any], query: dict[str, str]) -> _Answer:
        spec = body.get("model") if isinstance(body.get("model"), dict) else {}
        assert isinstance(spec, dict)
        base_id, name = spec.get("baseModelId"), spec.get("name")
        if base_id not in self.models or self.models[base_id]["type"] != "baseModel":
            return _error(404, f"no base model {base_id!r}", "unknownModel")
        if not isinstance(name, str) or not name:
            return _error(400, "model.name must be a non-empty string", "bodyParsingError")
        model_id = f"00000000-0000-0000-0000-{next(self._ids):012d}_model_adapter"
        self.models[model_id] = self._adapter(model_id, name, base_id)
        return 200, {"id": model_id}, {}

    def _delete_model(self, body: dict[str, Any], query: dict[str, str], model_id: str) -> _Answer:
        model = self.models.get(model_id)
        if model is None or model["type"] != "modelAdapter":
            return _error(404, f"no adapter {model_id!r}", "unknownModelAdapter")
        del self.models[model_id]
        return 200, {}, {}

    def _complete(self, body: dict[str, Any], query: dict[str, str], model_id: str) -> _Answer:
        text = body.get("query")
        if not isinstance(text, str) or not text:
            return _error(400, "query must be a non-empty string", "bodyParsingError")
        self.queries[text] += 1
        forced = _FORCED.search(text)
        if forced:
            return _error(int(forced.group(1)), f"forced by query: {forced.group(0)}")
        output = "echo: " + (text if self.echo_chars is None else text[: self.echo_chars])
        return 200, {"finishReason": "length", "generatedOutput": output, **self.extra}, {}

    def _fine_tune(self, body: dict[str, Any], query: dict[str, str], model_id: str) -> _Answer:
        samples = body.get("samples")
        if not isinstance(samples, list) or not samples:
            return _error(400, "samples must be a non-empty list", "bodyParsingError")
        return 200, {"numberOfTrainableTokens": 8 * len(samples), "sumLoss": 1.5 * len(samples)}, {}

    def _list_embeddings(self, body: dict[str, Any], query: dict[str, str]) -> _Answer:
        return 200, {"embeddingsModels": [{"slug": "bge-large"}]}, {}

    def _embed(self, body: dict[str, Any], query: dict[str, str], slug: str) -> _Answer:
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "inputs must be a non-empty list", "bodyParsingError")
        texts = [str(i.get("input", "")) if isinstance(i, dict) else "" for i in inputs]
        for text in texts:
            forced = _FORCED.search(text)
            if forced:
                return _error(int(forced.group(1)), f"forced by input: {forced.group(0)}")
        vectors = [{"embedding": [float(len(t)), float(n)], "index": n} for n, t in enumerate(texts)]
        return 200, {"embeddings": vectors[::-1]}, {}
