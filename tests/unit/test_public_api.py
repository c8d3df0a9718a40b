"""The public surface is deliberate: this test pins it."""

from __future__ import annotations

import gradient_async


def test_exported_names() -> None:
    assert sorted(gradient_async.__all__) == sorted(
        [
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
    )
    for name in gradient_async.__all__:
        assert hasattr(gradient_async, name), name


def test_every_error_is_a_gradient_error() -> None:
    for name in gradient_async.__all__:
        obj = getattr(gradient_async, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, gradient_async.GradientError), name


def test_package_is_typed() -> None:
    from importlib import resources

    assert resources.files("gradient_async").joinpath("py.typed").is_file()


def test_old_names_are_deprecated_aliases() -> None:
    import pytest

    with pytest.deprecated_call():
        assert gradient_async.BaseModel is gradient_async.BaseModelHandle  # type: ignore[attr-defined]
    with pytest.deprecated_call():
        from gradient_async import ValidationError  # type: ignore[attr-defined]
    assert ValidationError is gradient_async.InputValidationError
    from gradient_async import objects

    with pytest.deprecated_call():
        assert objects.BaseModel is objects.BaseModelHandle  # type: ignore[attr-defined]
