"""Thin resources: one method, one request. Reached through the client (`client.models`, ...)."""

from gradient_async.resources.adapters import AsyncAdapters
from gradient_async.resources.completions import AsyncCompletions
from gradient_async.resources.embeddings import AsyncEmbeddings
from gradient_async.resources.fine_tunes import AsyncFineTunes
from gradient_async.resources.models import AsyncModels

__all__ = ["AsyncAdapters", "AsyncCompletions", "AsyncEmbeddings", "AsyncFineTunes", "AsyncModels"]
