"""gradient_async: an asynchronous Python SDK for the Gradient AI platform.

Example::

    import asyncio
    from gradient_async import AsyncGradient

    async def main() -> None:
        async with AsyncGradient() as client:
            base = (await client.models.list(only_base=True))[-1]
            adapter = await base.create_adapter(name="my_model_adapter")
            print((await adapter.complete(query="Hello")).generated_output)
            await adapter.delete()

    asyncio.run(main())
"""

from gradient_async._client import AsyncGradient, RawResponse, RequestOptions
from gradient_async._config import NOT_GIVEN, ClientConfig, NotGiven
from gradient_async._errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConflictError,
    GradientError,
    InputValidationError,
    InternalServerError,
    MissingCredentialsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from gradient_async._hooks import CallEvent, Hooks, RequestEvent, ResponseEvent
from gradient_async._retry import RetryEvent, RetryPolicy
from gradient_async._version import __version__
from gradient_async.objects import BaseModelHandle, Model, ModelAdapter
from gradient_async.types import (
    CapabilityFilter,
    Completion,
    CompletionParams,
    EmbeddingsModel,
    EmbeddingsResponse,
    FineTuneResult,
    Guidance,
    Rag,
    Sample,
    StructuredInput,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncGradient",
    "AuthenticationError",
    "BadRequestError",
    "BaseModelHandle",
    "CallEvent",
    "CapabilityFilter",
    "ClientClosedError",
    "ClientConfig",
    "Completion",
    "CompletionParams",
    "ConflictError",
    "EmbeddingsModel",
    "EmbeddingsResponse",
    "FineTuneResult",
    "GradientError",
    "Hooks",
    "Guidance",
    "InputValidationError",
    "InternalServerError",
    "MissingCredentialsError",
    "Model",
    "ModelAdapter",
    "NOT_GIVEN",
    "NotFoundError",
    "NotGiven",
    "PermissionDeniedError",
    "Rag",
    "RateLimitError",
    "RawResponse",
    "RequestEvent",
    "RequestOptions",
    "ResponseEvent",
    "RetryEvent",
    "RetryPolicy",
    "Sample",
    "StructuredInput",
    "UnprocessableEntityError",
    "__version__",
]


_DEPRECATED = {"BaseModel": "BaseModelHandle", "ValidationError": "InputValidationError"}


def __getattr__(name: str) -> object:
    """Deprecated aliases (the old names shadowed pydantic's `BaseModel` and `ValidationError`)."""
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"gradient_async.{name} is deprecated and will be removed in a future release: use {new}",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]
