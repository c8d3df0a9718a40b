"""`POST /models/{id}/complete` and `POST /models/{id}/fine-tune`.

Both check their limits (tokens, samples) and admission (queue, rates) before the engine sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final

import anyio
from fastapi import APIRouter, Path, Request

from gradient_async.engine.base import AdapterSpec, GenerationRequest, TrainingSample, TrainingSegment
from gradient_async.server.auth import State, Workspace, caller_key
from gradient_async.server.bodies import StrictCompleteBody, StrictFineTuneBody, StrictSample, json_body, request_body
from gradient_async.server.errors import ApiError
from gradient_async.server.limits import LimitError, context_tokens, count_tokens
from gradient_async.server.responses import CompletionOut, FineTuneOut
from gradient_async.server.state import ServerState

__all__ = ["router"]

router = APIRouter(tags=["inference"])

ModelId = Annotated[str, Path(min_length=1, max_length=128, description="a base model id or an adapter id (50 chars)")]

# Texts shorter than this are counted on the event loop (a thread hop would cost more).
_ON_LOOP_CHARS: Final = 2048


async def _count(state: ServerState, slug: str, texts: Sequence[str]) -> list[int]:
    if sum(len(t) for t in texts) <= _ON_LOOP_CHARS:
        return count_tokens(state.engine, slug, texts)
    return await anyio.to_thread.run_sync(count_tokens, state.engine, slug, texts)


def _unprocessable(message: str, *, limit: str, maximum: int, actual: int) -> LimitError:
    return LimitError(422, message, limit=limit, maximum=maximum, actual=actual, type="unprocessableContent")


@router.post(
    "/models/{model_id}/complete",
    summary="Complete a prompt with a base model or an adapter",
    response_model=CompletionOut,
    openapi_extra=request_body(StrictCompleteBody),
)
async def complete(
    model_id: ModelId,
    body: Annotated[StrictCompleteBody, json_body(StrictCompleteBody)],
    request: Request,
    state: State,
    workspace: Workspace,
) -> CompletionOut:
    target = await state.resolve(model_id, workspace=workspace)
    if body.rag is not None:
        raise ApiError(
            404,
            f"rag.collectionId: no RAG collection {body.rag.collection_id!r} (this server has none)",
            type="unknownRagCollection",
        )
    limits = state.settings.limits
    slug = target.base.slug
    [prompt] = await _count(state, slug, [body.query])
    if prompt > limits.max_query_tokens:
        raise _unprocessable(
            f"query: {prompt} tokens; the limit is {limits.max_query_tokens} (max_query_tokens)",
            limit="max_query_tokens",
            maximum=limits.max_query_tokens,
            actual=prompt,
        )
    window = context_tokens(state.engine, slug, limits)
    generation = body.max_generated_token_count or 1
    if prompt + generation > window:
        raise _unprocessable(
            f"query ({prompt} tokens) plus maxGeneratedTokenCount ({generation}) exceed the context of "
            f"{slug!r}: {window} tokens",
            limit="context_tokens",
            maximum=window,
            actual=prompt + generation,
        )
    generation_request = GenerationRequest(
        model_slug=slug,
        prompt=body.query,
        adapter_id=target.adapter.id if target.adapter else None,
        max_new_tokens=body.max_generated_token_count,
        temperature=body.temperature,
        top_k=body.top_k,
        top_p=body.top_p,
        auto_template=True if body.auto_template is None else body.auto_template,
        guidance_choices=tuple(body.guidance.value) if body.guidance is not None else None,
    )
    async with state.admission.admit(caller_key(request), cost_tokens=prompt + generation):
        result = await state.engine.complete(generation_request)
    return CompletionOut(finish_reason=result.finish_reason, generated_output=result.text)


def _training_sample(sample: StrictSample) -> TrainingSample:
    segments: tuple[TrainingSegment, ...]
    if isinstance(sample.inputs, str):
        segments = (TrainingSegment(sample.inputs),)
    else:
        segments = tuple(TrainingSegment(s.value, s.trainable, s.parse_special_tokens) for s in sample.inputs)
    params = sample.fine_tuning_parameters
    multiplier = params.multiplier if params is not None and params.multiplier is not None else 1.0
    return TrainingSample(segments, multiplier)


async def _check_fine_tune_tokens(state: ServerState, slug: str, samples: Sequence[TrainingSample]) -> int:
    """Total tokens of the samples; 422 when one sample exceeds the context or all exceed the limit."""
    limits = state.settings.limits
    texts = ["".join(seg.value for seg in sample.segments) for sample in samples]
    counts = await _count(state, slug, texts)
    window = context_tokens(state.engine, slug, limits)
    for i, n in enumerate(counts):
        if n > window:
            raise _unprocessable(
                f"samples.{i}: {n} tokens; the context of {slug!r} is {window} tokens (context_tokens)",
                limit="context_tokens",
                maximum=window,
                actual=n,
            )
    total = sum(counts)
    if total > limits.max_fine_tune_tokens:
        raise _unprocessable(
            f"samples: {total} tokens in one fine-tune; the limit is {limits.max_fine_tune_tokens} "
            "(max_fine_tune_tokens): split them over several requests",
            limit="max_fine_tune_tokens",
            maximum=limits.max_fine_tune_tokens,
            actual=total,
        )
    return total


@router.post(
    "/models/{model_id}/fine-tune",
    summary="Train a model adapter on samples",
    response_model=FineTuneOut,
    openapi_extra=request_body(StrictFineTuneBody),
)
async def fine_tune(
    model_id: ModelId,
    body: Annotated[StrictFineTuneBody, json_body(StrictFineTuneBody)],
    request: Request,
    state: State,
    workspace: Workspace,
) -> FineTuneOut:
    target = await state.resolve(model_id, workspace=workspace)
    adapter = target.adapter
    if adapter is None:
        raise ApiError(
            400,
            f"{model_id!r} is a base model; create an adapter (POST /models) and fine-tune that",
            type="modelIncapableOfFineTuning",
        )
    samples = [_training_sample(s) for s in body.samples]
    tokens = await _check_fine_tune_tokens(state, adapter.base_model_slug, samples)
    spec = AdapterSpec(adapter.id, adapter.base_model_slug, rank=adapter.rank, learning_rate=adapter.learning_rate)
    async with state.admission.admit(caller_key(request), cost_tokens=tokens), state.adapter_lock(adapter.id):
        if await state.store.get_adapter(adapter.id, workspace=workspace) is None:
            raise ApiError(404, f"model adapter {adapter.id!r} was deleted", type="unknownModelAdapter")
        outcome = await state.engine.fine_tune(spec, samples)  # committed by the engine, or not at all
        await state.touch_adapter(adapter.id)  # metadata only: a failure here is logged, not reported
    return FineTuneOut(number_of_trainable_tokens=outcome.trainable_tokens, sum_loss=outcome.sum_loss)
