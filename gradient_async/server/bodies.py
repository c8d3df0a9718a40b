"""Request bodies the server validates: the SDK's own models from `gradient_async.types`, so the
client and the server agree on every limit.

Example::

    body = FineTuneBody.model_validate({"samples": [{"inputs": "hi", "fineTuningParameters": None}]})
"""

from __future__ import annotations

from gradient_async.types import CompleteBody, CreateAdapterBody, EmbedBody, FineTuneBody, Sample

__all__ = ["CompleteBody", "CreateAdapterBody", "EmbedBody", "FineTuneBody", "Sample"]
