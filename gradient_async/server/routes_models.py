"""`GET /models`, `GET /models/{id}`, `POST /models`, `DELETE /models/{id}`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from gradient_async.engine.base import AdapterSpec
from gradient_async.server.auth import State, Workspace
from gradient_async.server.bodies import CreateAdapterBody
from gradient_async.server.errors import ApiError
from gradient_async.server.store import AdapterRecord, new_adapter_id, utc_now
from gradient_async.types.models import CapabilityFilter

__all__ = ["router"]

router = APIRouter(tags=["models"])

ModelId = Annotated[str, Path(min_length=1, description="a base model id or an adapter id (50 characters)")]


@router.get("/models", summary="List base models and the workspace's adapters")
async def list_models(
    state: State,
    workspace: Workspace,
    only_base: Annotated[bool, Query(alias="onlyBase")] = False,
    capability: Annotated[CapabilityFilter, Query()] = CapabilityFilter.FINE_TUNE,
) -> dict[str, Any]:
    models: list[dict[str, object]] = []
    for base in state.base_models:
        if capability is CapabilityFilter.ANY or capability.value in base.capabilities:
            models.append(base.to_wire())
    if not only_base:
        usable = {
            b.id for b in state.base_models if capability is CapabilityFilter.ANY or capability.value in b.capabilities
        }
        for adapter in await state.store.list_adapters(workspace=workspace):
            if adapter.base_model_id in usable:
                models.append(adapter.to_wire())
    return {"models": models}


@router.get("/models/{model_id}", summary="Describe a model")
async def get_model(model_id: ModelId, state: State, workspace: Workspace) -> dict[str, object]:
    target = await state.resolve(model_id, workspace=workspace)
    return target.adapter.to_wire() if target.adapter is not None else target.base.to_wire()


@router.post("/models", summary="Create a model adapter over a base model")
async def create_adapter(body: CreateAdapterBody, state: State, workspace: Workspace) -> dict[str, str]:
    base = state.base_model(body.model.base_model_id)
    if base is None:
        raise ApiError(
            404,
            f"model.baseModelId: no base model {body.model.base_model_id!r}; "
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
    await state.engine.create_adapter(AdapterSpec(record.id, base.slug, rank=rank, learning_rate=lr))
    await state.store.add_adapter(record)
    return {"id": record.id}


@router.delete("/models/{model_id}", summary="Delete a model adapter")
async def delete_adapter(model_id: ModelId, state: State, workspace: Workspace) -> dict[str, object]:
    target = await state.resolve(model_id, workspace=workspace)
    if target.adapter is None:
        raise ApiError(400, f"{model_id!r} is a base model; only model adapters can be deleted")
    async with state.adapter_lock(model_id):
        if await state.store.delete_adapter(model_id, workspace=workspace):
            await state.engine.delete_adapter(model_id)
    return {}
