"""`client.adapters`: create, get and delete model adapters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gradient_async._client import RequestOptions
from gradient_async._config import NOT_GIVEN, NotGiven, TimeoutTypes
from gradient_async.objects import ModelAdapter
from gradient_async.resources._base import AsyncResource, path_id
from gradient_async.types._base import validate_input
from gradient_async.types.models import CreateAdapterBody, CreatedAdapter

__all__ = ["AsyncAdapters"]


class AsyncAdapters(AsyncResource):
    """`POST /models`, `GET /models/{id}`, `DELETE /models/{id}` for adapters."""

    async def create(
        self,
        *,
        base_model_id: str,
        name: str,
        rank: int | None = None,
        learning_rate: float | None = None,
        idempotent: bool = False,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> ModelAdapter:
        """Create an adapter over a base model.

        Not retried once the request may have reached the server (a retry could create
        two adapters) unless `idempotent=True`.

        Args:
            base_model_id: the base model's `id` (not its slug).
            name: display name of the adapter.
            rank: LoRA rank, 1–32.
            learning_rate: 0 < lr < 1.
            timeout, max_retries, extra_headers, extra_query, extra_body: per-call options (every method).

        Example::

            adapter = await client.adapters.create(base_model_id=base.id, name="my_model_adapter")
        """
        body = validate_input(
            CreateAdapterBody,
            "adapter",
            {
                "model": {"base_model_id": base_model_id, "name": name},
                "initial_hyperparameters": {
                    "lora_hyperparameters": {"rank": rank},
                    "training_arguments": {"learning_rate": learning_rate},
                },
            },
        )
        created = await self._client.request(
            RequestOptions(
                "POST",
                "/models",
                json=body.to_wire(),
                idempotent=idempotent,
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
            ),
            CreatedAdapter.model_validate,
        )
        return ModelAdapter(id=created.id, name=name, base_model_id=base_model_id).bind(self._client)

    async def get(
        self,
        adapter_id: str,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> ModelAdapter:
        """Describe an adapter.

        Example::

            adapter = await client.adapters.get(adapter_id)
            print(adapter.name, adapter.latest_update_time)
        """
        path = f"/models/{path_id(adapter_id, 'adapter_id')}"
        adapter = await self._client.request(
            RequestOptions(
                "GET",
                path,
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
            ),
            ModelAdapter.model_validate,
        )
        return adapter.bind(self._client)

    async def delete(
        self,
        adapter_id: str,
        *,
        timeout: TimeoutTypes | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        """Delete an adapter and its weights.

        Example::

            await client.adapters.delete(adapter.id)
        """
        path = f"/models/{path_id(adapter_id, 'adapter_id')}"
        await self._client.request(
            RequestOptions(
                "DELETE",
                path,
                timeout=timeout,
                max_retries=max_retries,
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
            ),
            None,
        )
