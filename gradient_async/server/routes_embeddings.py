"""`GET /embeddings` and `POST /embeddings/{slug}`."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Path

from gradient_async.server.auth import State, Workspace
from gradient_async.server.bodies import EmbedBody
from gradient_async.server.errors import ApiError

__all__ = ["EMBEDDINGS_SLUGS", "router"]

router = APIRouter(tags=["embeddings"])

# The official SDK 1.13.1 accepts only this slug.
EMBEDDINGS_SLUGS: Final = ("bge-large",)


@router.get("/embeddings", summary="List embeddings models")
async def list_embeddings_models(workspace: Workspace) -> dict[str, list[dict[str, str]]]:
    return {"embeddingsModels": [{"slug": slug} for slug in EMBEDDINGS_SLUGS]}


@router.post("/embeddings/{slug}", summary="Embed 1-256 texts")
async def embed(
    slug: Annotated[str, Path(min_length=1)], body: EmbedBody, state: State, workspace: Workspace
) -> dict[str, object]:
    if slug not in EMBEDDINGS_SLUGS:
        raise ApiError(404, f"no embeddings model {slug!r}; available: {', '.join(EMBEDDINGS_SLUGS)}")
    vectors = await state.engine.embed([item.input for item in body.inputs])
    return {"embeddings": [{"embedding": vector, "index": i} for i, vector in enumerate(vectors)]}
