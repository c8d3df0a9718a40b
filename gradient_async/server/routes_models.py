"""`GET /models`, `GET /models/{id}`, `POST /models`, `DELETE /models/{id}`."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from gradient_async.engine.base import AdapterSpec
from gradient_async.server.auth import State, Workspace, caller_key
from gradient_async.server.bodies import StrictCreateAdapterBody, json_body, request_body
from gradient_async.server.errors import ApiError
from gradient_async.server.limits import LimitError, ServerLimits
from gradient_async.server.responses import AdapterOut, BaseModelOut, CreatedAdapterOut, DeletedOut, ModelListOut
from gradient_async.server.store import AdapterRecord, new_adapter_id, utc_now
from gradient_async.types.models import CapabilityFilter

__all__ = ["check_adapter_name", "router"]

router = APIRouter(tags=["models"])

ModelId = Annotated[str, Path(min_length=1, max_length=128, description="a base model id or an adapter id (50 chars)")]


def check_adapter_name(name: str, limits: ServerLimits) -> None:
    """400 for a name over `max_adapter_name_chars` or with control/format characters (newlines, NUL...)."""
    if len(name) > limits.max_adapter_name_chars:
        raise LimitError(
            400,
            f"model.name: {len(name)} characters; the limit is {limits.max_adapter_name_chars} "
            "(max_adapter_name_chars)",
            limit="max_adapter_name_chars",
            maximum=limits.max_adapter_name_chars,
            actual=len(name),
            type="bodyParsingError",
        )
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")), None)
    if bad is not None:
        raise ApiError(
            400,
            f"model.name: control or invisible character U+{ord(bad):04X} is not allowed in an adapter name",
            type="bodyParsingError",
        )


@router.get("/models", summary="List base models and the workspace's adapters", response_model=ModelListOut)
async def list_models(
    state: State,
    workspace: Workspace,
    only_base: Annotated[bool, Query(alias="onlyBase")] = False,
    capability: Annotated[CapabilityFilter, Query()] = CapabilityFilter.FINE_TUNE,
) -> ModelListOut:
    models: list[BaseModelOut | AdapterOut] = []
    wanted = capability.value
    usable = {b.id for b in state.base_models if capability is CapabilityFilter.ANY or wanted in b.capabilities}
    models.extend(BaseModelOut.of(b) for b in state.base_models if b.id in usable)
    if not only_base:
        for adapter in await state.store.list_adapters(workspace=workspace):
            if adapter.base_model_id in usable:
                models.append(AdapterOut.of(adapter))
    return ModelListOut(models=models)


@router.get("/models/{model_id}", summary="Describe a model", response_model=BaseModelOut | AdapterOut)
async def get_model(model_id: ModelId, state: State, workspace: Workspace) -> BaseModelOut | AdapterOut:
    target = await state.resolve(model_id, workspace=workspace)
    return AdapterOut.of(target.adapter) if target.adapter is not None else BaseModelOut.of(target.base)


@router.post(
    "/models",
    summary="Create a model adapter over a base model",
    response_model=CreatedAdapterOut,
    openapi_extra=request_body(StrictCreateAdapterBody),
)
async def create_adapter(
    body: Annotated[StrictCreateAdapterBody, json_body(StrictCreateAdapterBody)],
    request: Request,
    state: State,
    workspace: Workspace,
) -> CreatedAdapterOut:
    check_adapter_name(body.model.name, state.settings.limits)
    base = state.base_model(body.model.base_model_id)
    if base is None:
        raise ApiError(
            404,
            f"model.baseModelId: no base model {body.model.base_model_id[:64]!r}; "
            "list them with GET /models?onlyBase=True&capability=any",
            type="unknownBaseModel",
        )
    if "fineTune" not in base.capabilities:
        raise ApiError(400, f"base model {base.slug!r} cannot be fine-tuned", type="modelIncapableOfFineTuning")
    hp = body.initial_hyperparameters
    rank = hp.lora_hyperparameters.rank if hp and hp.lora_hyperparameters else None
    lr = hp.training_arguments.learning_rate if hp and hp.training_arguments else None
    now = utc_now()
    record = AdapterRecord(new_adapter_id(), workspace, body.model.name, base.id, base.slug, rank, lr, now, now)
    async with state.admission.admit(caller_key(request)):
        await state.create_adapter(record, AdapterSpec(record.id, base.slug, rank=rank, learning_rate=lr))
    return CreatedAdapterOut(id=record.id)


@router.delete("/models/{model_id}", summary="Delete a model adapter", response_model=DeletedOut)
async def delete_adapter(model_id: ModelId, state: State, workspace: Workspace) -> DeletedOut:
    target = await state.resolve(model_id, workspace=workspace)
    if target.adapter is None:
        raise ApiError(400, f"{model_id!r} is a base model; only model adapters can be deleted")
    async with state.adapter_lock(model_id):
        if await state.store.delete_adapter(model_id, workspace=workspace):
            await state.engine.delete_adapter(model_id)
    return DeletedOut()
