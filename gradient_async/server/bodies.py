"""Request bodies as the server reads them: the SDK's models from `gradient_async.types`, made strict.

Strict means: `true` is not an integer, `"3"` is not a number, NaN and infinities are refused, and
numbers have upper bounds (`topK` <= 1,000,000, `temperature` <= 100, `multiplier` <= 1,000), so a
request that would overflow is a 400 naming the field instead of a trained adapter with a null loss.

Bodies are decoded and validated by `json_body(Model)`, in a worker thread when they are large, so a
big body never stalls the event loop. A fine-tune with more than `max_fine_tune_samples` samples is
refused (413) before its samples are validated.

Example::

    @router.post("/models/{model_id}/fine-tune", openapi_extra=request_body(StrictFineTuneBody))
    async def fine_tune(body: Annotated[StrictFineTuneBody, json_body(StrictFineTuneBody)]) -> ...: ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Final, TypeVar

import anyio
import pydantic
import pydantic_core
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ConfigDict, Field
from starlette.requests import ClientDisconnect

from gradient_async.server.errors import ApiError
from gradient_async.server.limits import LimitError, ServerLimits
from gradient_async.types import (
    CompleteBody,
    CreateAdapterBody,
    EmbedBody,
    EmbedInput,
    FineTuneBody,
    FineTuningParameters,
    Guidance,
    Hyperparameters,
    LoraHyperparameters,
    ModelAdapterSpec,
    Rag,
    Sample,
    StructuredInput,
    TrainingArguments,
)

__all__ = [
    "MAX_MULTIPLIER",
    "MAX_TEMPERATURE",
    "MAX_TOP_K",
    "OFF_LOOP_BYTES",
    "StrictCompleteBody",
    "StrictCreateAdapterBody",
    "StrictEmbedBody",
    "StrictFineTuneBody",
    "StrictSample",
    "add_body_schemas",
    "json_body",
    "parse_body",
    "request_body",
]

M = TypeVar("M", bound=pydantic.BaseModel)

MAX_TOP_K: Final = 1_000_000
MAX_TEMPERATURE: Final = 100.0
MAX_MULTIPLIER: Final = 1000.0
# Bodies above this size are decoded and validated in a worker thread.
OFF_LOOP_BYTES: Final = 32 * 1024

_STRICT = ConfigDict(strict=True, allow_inf_nan=False)


class StrictGuidance(Guidance):
    model_config = _STRICT


class StrictRag(Rag):
    model_config = _STRICT


class StrictCompleteBody(CompleteBody):
    model_config = _STRICT
    temperature: Annotated[float, Field(ge=0, le=MAX_TEMPERATURE)] | None = None
    top_k: Annotated[int, Field(gt=0, le=MAX_TOP_K)] | None = None
    guidance: StrictGuidance | None = None
    rag: StrictRag | None = None


class StrictStructuredInput(StructuredInput):
    model_config = _STRICT


class StrictFineTuningParameters(FineTuningParameters):
    model_config = _STRICT
    multiplier: Annotated[float, Field(gt=0, le=MAX_MULTIPLIER)] | None = None


class StrictSample(Sample):
    model_config = _STRICT
    # Narrowing a list field to the strict item type (pydantic validates the new type; lists are invariant).
    inputs: Annotated[str, Field(min_length=1)] | Annotated[list[StrictStructuredInput], Field(min_length=1)]  # type: ignore[assignment]
    fine_tuning_parameters: StrictFineTuningParameters | None = Field(default_factory=StrictFineTuningParameters)


class StrictFineTuneBody(FineTuneBody):
    model_config = _STRICT
    samples: Annotated[list[StrictSample], Field(min_length=1)]  # type: ignore[assignment]


class StrictLoraHyperparameters(LoraHyperparameters):
    model_config = _STRICT


class StrictTrainingArguments(TrainingArguments):
    model_config = _STRICT


class StrictHyperparameters(Hyperparameters):
    model_config = _STRICT
    lora_hyperparameters: StrictLoraHyperparameters | None = None
    training_arguments: StrictTrainingArguments | None = None


class StrictModelAdapterSpec(ModelAdapterSpec):
    model_config = _STRICT


class StrictCreateAdapterBody(CreateAdapterBody):
    model_config = _STRICT
    model: StrictModelAdapterSpec
    initial_hyperparameters: StrictHyperparameters | None = None


class StrictEmbedInput(EmbedInput):
    model_config = _STRICT


class StrictEmbedBody(EmbedBody):
    model_config = _STRICT
    inputs: Annotated[list[StrictEmbedInput], Field(min_length=1, max_length=256)]  # type: ignore[assignment]


def _precheck(model: type[pydantic.BaseModel], data: Any, limits: ServerLimits) -> None:
    """Counts that are cheaper to refuse before validating every item."""
    if issubclass(model, FineTuneBody) and isinstance(data, dict):
        samples = data.get("samples")
        if isinstance(samples, list) and len(samples) > limits.max_fine_tune_samples:
            raise LimitError(
                413,
                f"samples: {len(samples)} samples in one fine-tune; the limit is {limits.max_fine_tune_samples} "
                "(max_fine_tune_samples): split them over several requests",
                limit="max_fine_tune_samples",
                maximum=limits.max_fine_tune_samples,
                actual=len(samples),
                type="bodyParsingError",
            )


def parse_body(model: type[M], raw: bytes, limits: ServerLimits) -> M:
    """Decode and validate `raw` as `model`; RequestValidationError / LimitError say what is wrong.

    Example::

        body = parse_body(StrictCompleteBody, b'{"query": "Hi"}', DEFAULT_LIMITS)
    """
    try:
        data = pydantic_core.from_json(raw)
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"the body is not valid JSON ({exc})"}]
        ) from None
    _precheck(model, data, limits)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = [
            {"type": e["type"], "loc": ("body", *e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


def json_body(model: type[M]) -> Any:
    """A FastAPI dependency: the request's JSON body as `model` (large bodies parsed off the loop)."""

    async def read(request: Request) -> M:
        try:
            raw = await request.body()
        except ClientDisconnect:
            # The edge middleware refused the body (413 already sent) or the client went away.
            raise ApiError(400, "the request body was not received in full") from None
        limits: ServerLimits = request.app.state.gradient.settings.limits
        if len(raw) <= OFF_LOOP_BYTES:
            return parse_body(model, raw, limits)
        return await anyio.to_thread.run_sync(parse_body, model, raw, limits)

    dependency: Callable[[Request], Awaitable[M]] = read
    return Depends(dependency)


def request_body(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body `json_body` reads (add the schemas with `add_body_schemas`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def add_body_schemas(openapi: dict[str, Any], models: Iterable[type[pydantic.BaseModel]]) -> None:
    """Put the JSON schemas of `models` (and the models they use) into `openapi`'s components."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
