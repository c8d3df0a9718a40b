"""Issue 11 §1: size and work limits, checked before the work; strict numbers; declared responses."""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio
import httpx
import pydantic
import pytest

from gradient_async.server import ServerSettings, create_app
from gradient_async.server.cli import add_arguments, build_limits
from gradient_async.server.edge import EdgeLimits
from gradient_async.server.limits import DEFAULT_LIMITS, ServerLimits
from gradient_async.server.responses import FineTuneOut
from gradient_async.testing import TEST_TOKEN, TEST_WORKSPACE, GradientServer

HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}", "x-gradient-workspace-id": TEST_WORKSPACE}


async def raw(srv: GradientServer, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {**HEADERS, **kw.pop("headers", {})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=srv.app), base_url="http://local") as http:
        return await http.request(method, path, headers=headers, **kw)


async def adapter_id(srv: GradientServer) -> str:
    body = {"model": {"baseModelId": srv.base_model_ids[-1], "name": "limits"}}
    r = await raw(srv, "POST", "/api/models", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def limited(srv: GradientServer, **changes: Any) -> None:
    fields = {name: getattr(DEFAULT_LIMITS, name) for name in DEFAULT_LIMITS.__dataclass_fields__}
    srv.state.settings.limits = ServerLimits(**{**fields, **changes})


class _Asgi:
    """Drive an ASGI app by hand: a body in chunks, and a record of what was read and sent."""

    def __init__(self, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> None:
        self.chunks = chunks
        self.headers = headers
        self.reads = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.reads >= len(self.chunks):
            return {"type": "http.disconnect"}
        chunk = self.chunks[self.reads]
        self.reads += 1
        return {"type": "http.request", "body": chunk, "more_body": self.reads < len(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, app: Any, path: str) -> tuple[int, dict[str, Any]]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": ("127.0.0.1", 1),
            "server": ("local", 80),
        }
        await app(scope, self.receive, self.send)
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return starts[0]["status"], json.loads(body)


def _asgi_headers(extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    base = [(b"authorization", f"Bearer {TEST_TOKEN}".encode()), (b"x-gradient-workspace-id", TEST_WORKSPACE.encode())]
    return base + [(b"content-type", b"application/json")] + (extra or [])


async def test_chunked_body_over_the_limit_is_413_without_reading_the_rest(gradient_server: GradientServer) -> None:
    limited(gradient_server, max_body_bytes=10_000)
    chunk = b" " * 4096
    asgi = _Asgi([b'{"query": "' + chunk] + [chunk] * 500 + [b'"}'], _asgi_headers())
    status, body = await asgi.run(gradient_server.app, f"/api/models/{gradient_server.base_model_ids[-1]}/complete")
    assert status == 413 and "max_body_bytes" in body["message"] and body["type"] == "bodyParsingError"
    assert body["payload"]["maximum"] == 10_000
    assert asgi.reads == 3  # 4 KiB, 8 KiB, 12 KiB > 10 KB: stopped there, 499 chunks never read
    start = next(m for m in asgi.sent if m["type"] == "http.response.start")
    assert (b"connection", b"close") in start["headers"]


async def test_content_length_over_the_limit_is_413_before_reading(gradient_server: GradientServer) -> None:
    limited(gradient_server, max_body_bytes=1000)
    asgi = _Asgi([b"x" * 2000], _asgi_headers([(b"content-length", b"2000")]))
    status, body = await asgi.run(gradient_server.app, f"/api/models/{gradient_server.base_model_ids[-1]}/complete")
    assert status == 413 and body["payload"] == {"limit": "max_body_bytes", "maximum": 1000, "actual": 2000}
    assert asgi.reads == 0
    r = await raw(gradient_server, "POST", "/api/models", content=b"{}", headers={"content-length": "12abc"})
    assert r.status_code == 400 and "Content-Length" in r.json()["message"]


async def test_edge_limits_alone_never_hold_more_than_the_limit() -> None:
    held: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            total += len(message["body"])
            held.append(total)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    edge = EdgeLimits(app, limits=lambda: ServerLimits(max_body_bytes=100))
    asgi = _Asgi([b"a" * 60] * 10, [])
    status, _ = await asgi.run(edge, "/api/x")
    assert status == 413 and held == [60]  # the app never saw the chunk that crossed the limit
    ok = _Asgi([b"a" * 50, b"a" * 50], [])
    assert (await ok.run(edge, "/api/x"))[0] == 200


async def test_a_body_that_never_finishes_is_408() -> None:
    reached = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            reached.append(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    class Slow(_Asgi):
        async def receive(self) -> dict[str, Any]:
            if self.reads == 0:
                self.reads += 1
                return {"type": "http.request", "body": b"{", "more_body": True}
            await anyio.sleep_forever()
            raise AssertionError

    edge = EdgeLimits(app, limits=lambda: ServerLimits(body_timeout_s=0.01))
    status, body = await Slow([], []).run(edge, "/api/x")
    assert status == 408 and body["payload"]["limit"] == "body_timeout_s" and reached == [1]


async def test_header_bytes_431_and_long_workspace_400(gradient_server: GradientServer) -> None:
    limited(gradient_server, max_header_bytes=2048)
    r = await raw(gradient_server, "GET", "/api/models", headers={"x-padding": "p" * 3000})
    assert r.status_code == 431 and "max_header_bytes" in r.json()["message"]
    long_ws = "w" * 5000
    limited(gradient_server, max_header_bytes=16384)
    r = await raw(gradient_server, "GET", "/api/models", headers={"x-gradient-workspace-id": long_ws})
    assert r.status_code == 400 and "max_workspace_chars" in r.json()["message"]
    assert long_ws not in r.text  # never echoed back


async def test_query_tokens_and_context_are_422_naming_the_limit(gradient_server: GradientServer) -> None:
    base = gradient_server.base_model_ids[-1]
    limited(gradient_server, max_query_tokens=10, context_tokens=20)
    r = await raw(gradient_server, "POST", f"/api/models/{base}/complete", json={"query": "one " * 11})
    assert r.status_code == 422 and "max_query_tokens" in r.json()["message"]
    assert r.json()["type"] == "unprocessableContent" and r.json()["payload"]["actual"] == 11
    body = {"query": "one " * 10, "maxGeneratedTokenCount": 11}
    r = await raw(gradient_server, "POST", f"/api/models/{base}/complete", json=body)
    assert r.status_code == 422 and r.json()["payload"]["limit"] == "context_tokens"
    body["maxGeneratedTokenCount"] = 10
    assert (await raw(gradient_server, "POST", f"/api/models/{base}/complete", json=body)).status_code == 200


async def test_fine_tune_samples_413_and_tokens_422_before_training(gradient_server: GradientServer) -> None:
    aid = await adapter_id(gradient_server)
    limited(gradient_server, max_fine_tune_samples=3, max_fine_tune_tokens=50, context_tokens=30)
    engine: Any = gradient_server.state.engine
    r = await raw(gradient_server, "POST", f"/api/models/{aid}/fine-tune", json={"samples": [{"inputs": "a"}] * 4})
    assert r.status_code == 413 and "max_fine_tune_samples" in r.json()["message"]
    too_many_tokens = {"samples": [{"inputs": "w " * 20}] * 3}
    r = await raw(gradient_server, "POST", f"/api/models/{aid}/fine-tune", json=too_many_tokens)
    assert r.status_code == 422
    assert r.json()["payload"] == {"limit": "max_fine_tune_tokens", "maximum": 50, "actual": 60}
    r = await raw(gradient_server, "POST", f"/api/models/{aid}/fine-tune", json={"samples": [{"inputs": "w " * 31}]})
    assert r.status_code == 422 and r.json()["message"].startswith("samples.0:")
    assert engine.fine_tune_calls == 0
    r = await raw(gradient_server, "POST", f"/api/models/{aid}/fine-tune", json={"samples": [{"inputs": "w " * 30}]})
    assert r.status_code == 200 and engine.fine_tune_calls == 1


@pytest.mark.parametrize(
    ("name", "needle"),
    [("n" * 257, "max_adapter_name_chars"), ("bad\nname", "U+000A"), ("nul\x00", "U+0000"), ("rtl\u202e", "U+202E")],
)
async def test_adapter_names(gradient_server: GradientServer, name: str, needle: str) -> None:
    body = {"model": {"baseModelId": gradient_server.base_model_ids[-1], "name": name}}
    r = await raw(gradient_server, "POST", "/api/models", json=body)
    assert r.status_code == 400 and needle in r.json()["message"] and "model.name" in r.json()["message"]
    assert await gradient_server.state.store.list_adapters(workspace=TEST_WORKSPACE) == []


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"samples": [{"inputs": "x", "fineTuningParameters": {"multiplier": Infinity}}]}', "multiplier"),
        ('{"samples": [{"inputs": "x", "fineTuningParameters": {"multiplier": NaN}}]}', "multiplier"),
        ('{"samples": [{"inputs": "x", "fineTuningParameters": {"multiplier": 1e308}}]}', "multiplier"),
        ('{"samples": [{"inputs": "x", "fineTuningParameters": {"multiplier": 1e999}}]}', "multiplier"),
        ('{"samples": [{"inputs": [{"value": "x", "trainable": 1}]}]}', "trainable"),
    ],
)
async def test_fine_tune_numbers_are_strict(gradient_server: GradientServer, text: str, field: str) -> None:
    aid = await adapter_id(gradient_server)
    r = await raw(gradient_server, "POST", f"/api/models/{aid}/fine-tune", content=text)
    assert r.status_code == 400 and field in r.json()["message"], r.text
    assert r.json()["type"] == "bodyParsingError"
    engine: Any = gradient_server.state.engine
    assert engine.fine_tune_calls == 0  # refused, not trained (the old server trained and answered sumLoss null)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"query": "x", "topK": 99999999999999999999999}', "topK"),
        ('{"query": "x", "maxGeneratedTokenCount": true}', "maxGeneratedTokenCount"),
        ('{"query": "x", "temperature": NaN}', "temperature"),
        ('{"query": "x", "temperature": -Infinity}', "temperature"),
        ('{"query": "x", "topP": "0.5"}', "topP"),
        ('{"query": 5}', "query"),
        ('{"query": "x"', "JSON"),
    ],
)
async def test_complete_numbers_are_strict(gradient_server: GradientServer, body: str, field: str) -> None:
    r = await raw(gradient_server, "POST", f"/api/models/{gradient_server.base_model_ids[-1]}/complete", content=body)
    assert r.status_code == 400 and field in r.json()["message"], r.text


async def test_bool_rank_and_inf_learning_rate_refused(gradient_server: GradientServer) -> None:
    base = gradient_server.base_model_ids[-1]
    for hp, field in (
        ('{"loraHyperparameters": {"rank": true}}', "rank"),
        ('{"trainingArguments": {"learningRate": NaN}}', "learningRate"),
    ):
        text = f'{{"model": {{"baseModelId": "{base}", "name": "n"}}, "initialHyperparameters": {hp}}}'
        r = await raw(gradient_server, "POST", "/api/models", content=text)
        assert r.status_code == 400 and field in r.json()["message"]


def test_a_response_never_carries_a_null_number() -> None:
    with pytest.raises(pydantic.ValidationError):
        FineTuneOut(number_of_trainable_tokens=1, sum_loss=float("inf"))
    assert FineTuneOut(number_of_trainable_tokens=1, sum_loss=2.5).model_dump(by_alias=True) == {
        "numberOfTrainableTokens": 1,
        "sumLoss": 2.5,
    }


async def test_routes_declare_response_and_request_models(gradient_server: GradientServer) -> None:
    schema = (await raw(gradient_server, "GET", "/openapi.json")).json()
    for path, method in (
        ("/api/models/{model_id}/complete", "post"),
        ("/api/models/{model_id}/fine-tune", "post"),
        ("/api/models", "post"),
        ("/api/embeddings/{slug}", "post"),
    ):
        op = schema["paths"][path][method]
        assert "$ref" in op["requestBody"]["content"]["application/json"]["schema"], path
        assert "$ref" in op["responses"]["200"]["content"]["application/json"]["schema"], path
    assert "StrictSample" in schema["components"]["schemas"]
    assert schema["paths"]["/api/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_limits_validate_their_values() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        ServerLimits(max_body_bytes=0)
    with pytest.raises(ValueError, match="max_queue"):
        ServerLimits(max_queue=True)
    with pytest.raises(ValueError, match="tokens_per_minute"):
        ServerLimits(tokens_per_minute=float("inf"))


def test_serve_flags_set_every_limit() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--max-body-bytes", "1000", "--max-queue", "2", "--tokens-per-minute", "600"])
    limits = build_limits(args)
    assert (limits.max_body_bytes, limits.max_queue, limits.tokens_per_minute) == (1000, 2, 600.0)
    assert build_limits(parser.parse_args([])) == DEFAULT_LIMITS
    for name in DEFAULT_LIMITS.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in parser.format_help()


def test_settings_carry_limits(tmp_path: Any) -> None:
    app = create_app(ServerSettings(data_dir=tmp_path, limits=ServerLimits(max_queue=3)))
    try:
        assert app.state.gradient.settings.limits.max_queue == 3
    finally:
        app.state.gradient.store.close()
