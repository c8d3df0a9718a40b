"""`client.models`: list, get and delete models (base models and adapters)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Annotated, Any, Literal, overload

from pydantic import Discriminator, Tag, TypeAdapter

from gradient_async._client import RequestOptions
from gradient_async._config import NOT_GIVEN, NotGiven, TimeoutTypes
from gradient_async.objects import BaseModelHandle, Model, ModelAdapter
from gradient_async.resources._base import AsyncResource, path_id
from gradient_async.types._base import GradientModel
from gradient_async.types.models import CapabilityFilter

__all__ = ["AsyncModels", "parse_model"]


def _kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind not in ("baseModel", "modelAdapter"):
        raise ValueError(f"unknown model type {kind!r}: expected 'baseModel' or 'modelAdapter'")
    return str(kind)


_ModelUnion = Annotated[
    Annotated[BaseModelHandle, Tag("baseModel")] | Annotated[ModelAdapter, Tag("modelAdapter")],
    Discriminator(_kind),
]


class _ModelList(GradientModel):
    models: list[_ModelUnion]


_MODEL = TypeAdapter(_ModelUnion)


def parse_model(data: Any) -> Model:
    """A model object (base or adapter, by its `type`) from its wire form."""
    return _MODEL.validate_python(data)


class AsyncModels(AsyncResource):
    """`GET /models`, `GET /models/{id}`, `DELETE /models/{id}`."""

    @overload
    async def list(
        self,
        *,
        only_base: Literal[True],
        capability: CapabilityFilter | str | None = ...,
        timeout: TimeoutTypes | NotGiven = ...,
        max_retries: int | NotGiven = ...,
        extra_headers: Mapping[str, str] | None = ...,
        extra_query: Mapping[str, str] | None = ...,
        extra_body: Mapping[str, Any] | None = ...,
    ) -> builtins.list[BaseModelHandle]: ...

    @overload
    async def list(
        self,
        *,
        only_base: bool = ...,
        capability: CapabilityFilter | str | None = ...,
        timeout: TimeoutTypes | NotGiven = ...,
        max_retries: int | NotGiven = ...,
        extra_headers: Mapping[str, str] | None = ...,
        extra_query: Mapping[str, str] | None = ...,
        extra_body: Mapping[str, Any] | None = ...,
    ) -> builtins.list[Model]: ...

    async def list(
        self,
        *,
        only_base: bool = False,
        capability: CapabilityFilter | str | None = CapabilityFilter.ANY,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> builtins.list[BaseModelHandle] | builtins.list[Model]:
        """Base models and (unless `only_base`) adapters of the workspace. With `only_base=True`
        the result is typed `list[BaseModelHandle]`, so `create_adapter` type-checks without a cast.

        Args:
            only_base: only base models.
            capability: "any" (default), "fineTune" or "complete"; None omits the filter
                (the server then applies its own default).
            timeout, max_retries, extra_headers, extra_query, extra_body: per-call options.

        Example::

            bases = await client.models.list(only_base=True)
            print([m.slug for m in bases])
        """
        params = {"onlyBase": "True" if only_base else "False"}
        if capability is not None:
            params["capability"] = CapabilityFilter(capability).value
        result = await self._client.request(
            RequestOptions(
                "GET",
                "/models",
                params=params,
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
            ),
            _ModelList.model_validate,
        )
        models = [m.bind(self._client) for m in result.models]
        if only_base:
            return [m for m in models if isinstance(m, BaseModelHandle)]
        return models

    async def get(
        self,
        model_id: str,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Model:
        """One model by id.

        Example::

            adapter = await client.models.get("…_model_adapter")
        """
        path = f"/models/{path_id(model_id, 'model_id')}"
        model = await self._client.request(
            RequestOptions(
                "GET",
                path,
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
            ),
            parse_model,
        )
        return model.bind(self._client)

    async def delete(
        self,
        model_id: str,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        """Delete an adapter (base models cannot be deleted).

        Example::

            await client.models.delete(adapter.id)
        """
        path_id(model_id, "model_id")  # an error names this method's own parameter
        await self._client.adapters.delete(  # the same DELETE /models/{id}
            model_id,
            timeout=timeout,
            max_retries=max_retries,
            extra_headers=extra_headers,
            extra_query=extra_query,
            extra_body=extra_body,
        )
