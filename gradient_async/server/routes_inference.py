"""`POST /models/{id}/complete` and `POST /models/{id}/fine-tune`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from gradient_async.engine.base import AdapterSpec, GenerationRequest, TrainingSample, TrainingSegment
from gradient_async.server.auth import State, Workspace
from gradient_async.server.bodies import CompleteBody, FineTuneBody, Sample
from gradient_async.server.errors import ApiError

__all__ = ["router"]

router = APIRouter(tags=["inference"])

ModelId = Annotated[str, Path(min_length=1, description="a base model id or an adapter id (50 characters)")]


@router.post("/models/{model_id}/complete", summary="Complete a prompt with a base model or an adapter")
async def complete(model_id: ModelId, body: CompleteBody, state: State, workspace: Workspace) -> dict[str, str]:
    target = await state.resolve(model_id, workspace=workspace)
    if body.rag is not None:
        raise ApiError(
            404,
            f"rag.collectionId: no RAG collection {body.rag.collection_id!r} (this server has none)",
            type="unknownRagCollection",
        )
    request = GenerationRequest(
        model_slug=target.base.slug,
        prompt=body.query,
        adapter_id=target.adapter.id if target.adapter else None,
        max_new_tokens=body.max_generated_token_count,
        temperature=body.temperature,
        top_k=body.top_k,
        top_p=body.top_p,
        auto_template=True if body.auto_template is None else body.auto_template,
        guidance_choices=tuple(body.guidance.value) if body.guidance is not None else None,
    )
    result = await state.engine.complete(request)
    return {"finishReason": result.finish_reason, "generatedOutput": result.text}


def _training_sample(sample: Sample) -> TrainingSample:
    segments: tuple[TrainingSegment, ...]
    if isinstance(sample.inputs, str):
        segments = (TrainingSegment(sample.inputs),)
    else:
        segments = tuple(TrainingSegment(s.value, s.trainable, s.parse_special_tokens) for s in sample.inputs)
    params = sample.fine_tuning_parameters
    multiplier = params.multiplier if params is not None and params.multiplier is not None else 1.0
    return TrainingSample(segments, multiplier)


@router.post("/models/{model_id}/fine-tune", summary="Train a model adapter on samples")
async def fine_tune(model_id: ModelId, body: FineTuneBody, state: State, workspace: Workspace) -> dict[str, object]:
    target = await state.resolve(model_id, workspace=workspace)
    adapter = target.adapter
    if adapter is None:
        raise ApiError(
            400,
            f"{model_id!r} is a base model; create an adapter (POST /models) and fine-tune that",
            type="modelIncapableOfFineTuning",
        )
    samples = [_training_sample(s) for s in body.samples]
    spec = AdapterSpec(adapter.id, adapter.base_model_slug, rank=adapter.rank, learning_rate=adapter.learning_rate)
    async with state.adapter_lock(adapter.id):
        if await state.store.get_adapter(adapter.id, workspace=workspace) is None:
            raise ApiError(404, f"model adapter {adapter.id!r} was deleted", type="unknownModelAdapter")
        outcome = await state.engine.fine_tune(spec, samples)
        await state.store.touch_adapter(adapter.id)
    return {"numberOfTrainableTokens": outcome.trainable_tokens, "sumLoss": outcome.sum_loss}
