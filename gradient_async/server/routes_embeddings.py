"""`GET /embeddings` and `POST /embeddings/{slug}`."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Path, Request

from gradient_async.server.auth import State, Workspace, caller_key
from gradient_async.server.bodies import StrictEmbedBody, json_body, request_body
from gradient_async.server.errors import ApiError
from gradient_async.server.responses import EmbeddingOut, EmbeddingsModelOut, EmbeddingsModelsOut, EmbeddingsOut

__all__ = ["EMBEDDINGS_SLUGS", "router"]

router = APIRouter(tags=["embeddings"])

# The official SDK 1.13.1 accepts only this slug.
EMBEDDINGS_SLUGS: Final = ("bge-large",)


@router.get("/embeddings", summary="List embeddings models", response_model=EmbeddingsModelsOut)
async def list_embeddings_models(workspace: Workspace) -> EmbeddingsModelsOut:
    return EmbeddingsModelsOut(embeddings_models=[EmbeddingsModelOut(slug=slug) for slug in EMBEDDINGS_SLUGS])


@router.post(
    "/embeddings/{slug}",
    summary="Embed 1-256 texts",
    response_model=EmbeddingsOut,
    openapi_extra=request_body(StrictEmbedBody),
)
async def embed(
    slug: Annotated[str, Path(min_length=1, max_length=128)],
    body: Annotated[StrictEmbedBody, json_body(StrictEmbedBody)],
    request: Request,
    state: State,
    workspace: Workspace,
) -> EmbeddingsOut:
    if slug not in EMBEDDINGS_SLUGS:
        raise ApiError(404, f"no embeddings model {slug!r}; available: {', '.join(EMBEDDINGS_SLUGS)}")
    texts = [item.input for item in body.inputs]
    async with state.admission.admit(caller_key(request), cost_tokens=sum(len(t) for t in texts) // 4 + 1):
        vectors = await state.engine.embed(texts)
    return EmbeddingsOut(embeddings=[EmbeddingOut(embedding=vector, index=i) for i, vector in enumerate(vectors)])
